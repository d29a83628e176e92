"""Bayes: a logistic-regression weight per token, beside its counts."""


def up(database):
    # DOUBLE PRECISION is a float8 in PostgreSQL and a REAL column in SQLite.
    database.execute_sql(
        "ALTER TABLE bayes_token ADD COLUMN weight DOUBLE PRECISION NOT NULL "
        "DEFAULT 0")
