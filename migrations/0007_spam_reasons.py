"""Why a message was judged so: its Bayes probability and the clues behind it.

``spam_clues`` holds JSON (see core.tracking.clues_of): the tokens that
weighed most, the URI blocklist hits and the note saying why there is no
Bayes score. Rows written before this step keep NULL and "" and show as
"nothing recorded".
"""


def up(database):
    # DOUBLE PRECISION is a float8 in PostgreSQL and a REAL column in SQLite;
    # both accept ADD COLUMN with a constant default on a table with rows.
    database.execute_sql(
        "ALTER TABLE message ADD COLUMN bayes_probability DOUBLE PRECISION NULL")
    database.execute_sql(
        "ALTER TABLE message ADD COLUMN spam_clues TEXT NOT NULL DEFAULT ''")
