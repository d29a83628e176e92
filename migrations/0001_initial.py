"""First schema: admins, tracked messages, recipients, quarantine, Bayes."""

import datetime

import peewee as pw


def _now():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def up(database):
    # Models are frozen here as they were when this script was written, so a
    # later change to core/models.py cannot change what this step creates.
    class Base(pw.Model):
        class Meta:
            legacy_table_names = False

    class AdminUser(Base):
        username = pw.CharField(max_length=64, unique=True)
        password_hash = pw.CharField(max_length=255)
        role = pw.CharField(max_length=16, default="admin")
        created_at = pw.DateTimeField(default=_now)
        last_login_at = pw.DateTimeField(null=True)

    class Message(Base):
        qid = pw.CharField(max_length=32, unique=True)
        message_id = pw.TextField(default="")
        sender = pw.TextField(default="")
        subject = pw.TextField(default="")
        size = pw.IntegerField(default=0)
        client_ip = pw.CharField(max_length=64, default="")
        helo = pw.TextField(default="")
        direction = pw.CharField(max_length=8, default="in")
        score = pw.FloatField(null=True)
        virus = pw.TextField(default="")
        verdict = pw.CharField(max_length=16, default="queued", index=True)
        status = pw.CharField(max_length=16, default="queued", index=True)
        detail = pw.TextField(default="")
        received_at = pw.DateTimeField(default=_now, index=True)
        filtered_at = pw.DateTimeField(null=True)
        done_at = pw.DateTimeField(null=True)

    class Recipient(Base):
        message = pw.ForeignKeyField(Message, on_delete="CASCADE")
        address = pw.TextField()
        status = pw.CharField(max_length=16, default="queued")
        reply = pw.TextField(default="")
        attempts = pw.IntegerField(default=0)
        updated_at = pw.DateTimeField(default=_now)

        class Meta:
            indexes = ((("message", "address"), True),)

    class QuarantineItem(Base):
        message = pw.ForeignKeyField(Message, on_delete="CASCADE")
        kind = pw.CharField(max_length=16, index=True)
        reason = pw.TextField(default="")
        created_at = pw.DateTimeField(default=_now, index=True)
        state = pw.CharField(max_length=16, default="held", index=True)
        handled_at = pw.DateTimeField(null=True)
        handled_by = pw.CharField(max_length=64, default="")

    class BayesToken(Base):
        token = pw.BigIntegerField(primary_key=True)
        ham = pw.IntegerField(default=0)
        spam = pw.IntegerField(default=0)
        last_seen = pw.IntegerField(default=0)

    class BayesMeta(Base):
        key = pw.CharField(max_length=32, primary_key=True)
        value = pw.BigIntegerField(default=0)

    tables = [AdminUser, Message, Recipient, QuarantineItem, BayesToken, BayesMeta]
    with database.bind_ctx(tables):
        database.create_tables(tables)
