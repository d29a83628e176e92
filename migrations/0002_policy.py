"""SMTP-time policy: settings, block/welcome lists, greylisting, counters."""

import datetime

import peewee as pw


def _now():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def up(database):
    # Frozen copies of the models as this step creates them.
    class Base(pw.Model):
        class Meta:
            legacy_table_names = False

    class PolicySetting(Base):
        key = pw.CharField(max_length=64, primary_key=True)
        value = pw.TextField()
        updated_at = pw.DateTimeField(default=_now)

    class PolicyListEntry(Base):
        list_name = pw.CharField(max_length=16, index=True)
        kind = pw.CharField(max_length=16)
        pattern = pw.TextField()
        comment = pw.TextField(default="")
        created_at = pw.DateTimeField(default=_now)

    class GreylistTriplet(Base):
        network = pw.CharField(max_length=64)
        sender = pw.TextField()
        recipient = pw.TextField()
        first_seen = pw.FloatField()
        last_seen = pw.FloatField(index=True)
        passed_at = pw.FloatField(null=True)
        attempts = pw.IntegerField(default=1)

        class Meta:
            indexes = ((("network", "sender", "recipient"), True),)

    class PolicyCounter(Base):
        day = pw.DateField()
        check_name = pw.CharField(max_length=32)
        result = pw.CharField(max_length=32)
        count = pw.IntegerField(default=0)

        class Meta:
            indexes = ((("day", "check_name", "result"), True),)

    tables = [PolicySetting, PolicyListEntry, GreylistTriplet, PolicyCounter]
    with database.bind_ctx(tables):
        database.create_tables(tables)
