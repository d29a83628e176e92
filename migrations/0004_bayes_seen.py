"""Bayes: remember learned messages (digest and class); index token age."""

import peewee as pw


def up(database):
    # Frozen copy of the model as this step creates it.
    class BayesSeen(pw.Model):
        digest = pw.CharField(max_length=64, primary_key=True)
        spam = pw.BooleanField()
        day = pw.IntegerField(default=0)

        class Meta:
            legacy_table_names = False

    with database.bind_ctx([BayesSeen]):
        database.create_tables([BayesSeen])
    # Expiry and incremental reloads select tokens by last_seen.
    database.execute_sql(
        "CREATE INDEX IF NOT EXISTS bayes_token_last_seen ON bayes_token (last_seen)")
