"""Bayes: the weight array of the character 4-gram model, one row per model."""

import peewee as pw


def up(database):
    # Frozen copy of the model as this step creates it.
    class BayesModel(pw.Model):
        name = pw.CharField(max_length=32, primary_key=True)
        version = pw.BigIntegerField(default=0)
        data = pw.BlobField()

        class Meta:
            legacy_table_names = False

    with database.bind_ctx([BayesModel]):
        database.create_tables([BayesModel])
