"""peewee models. The database is bound late, from the configured URL.

The schema itself is created by the numbered scripts in ``migrations/``;
these classes must match the newest one.
"""

from __future__ import annotations

import datetime as _dt

import peewee as pw

db = pw.DatabaseProxy()


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)


class BaseModel(pw.Model):
    class Meta:
        database = db
        legacy_table_names = False


class AdminUser(BaseModel):
    """A person who may log in to the web admin."""

    username = pw.CharField(max_length=64, unique=True)
    password_hash = pw.CharField(max_length=255)
    role = pw.CharField(max_length=16, default="admin")
    created_at = pw.DateTimeField(default=utcnow)
    last_login_at = pw.DateTimeField(null=True)


class Message(BaseModel):
    """One accepted SMTP transaction, tracked by its queue id."""

    qid = pw.CharField(max_length=32, unique=True)
    message_id = pw.TextField(default="")
    sender = pw.TextField(default="")
    subject = pw.TextField(default="")
    size = pw.IntegerField(default=0)
    client_ip = pw.CharField(max_length=64, default="")
    helo = pw.TextField(default="")
    direction = pw.CharField(max_length=8, default="in")  # in | out
    score = pw.FloatField(null=True)
    virus = pw.TextField(default="")
    # queued -> clean | spam | virus | blocked | error
    verdict = pw.CharField(max_length=16, default="queued", index=True)
    # queued | delivered | deferred | bounced | quarantined | partial | deleted
    status = pw.CharField(max_length=16, default="queued", index=True)
    detail = pw.TextField(default="")
    received_at = pw.DateTimeField(default=utcnow, index=True)
    filtered_at = pw.DateTimeField(null=True)
    done_at = pw.DateTimeField(null=True)


class Recipient(BaseModel):
    """Delivery state of one envelope recipient of a message."""

    message = pw.ForeignKeyField(Message, backref="recipients", on_delete="CASCADE")
    address = pw.TextField()
    # queued | delivered | deferred | bounced | quarantined
    status = pw.CharField(max_length=16, default="queued")
    reply = pw.TextField(default="")
    attempts = pw.IntegerField(default=0)
    updated_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("message", "address"), True),)


class QuarantineItem(BaseModel):
    """A message held back; its bytes live in the quarantine directory."""

    message = pw.ForeignKeyField(Message, backref="quarantine", on_delete="CASCADE")
    kind = pw.CharField(max_length=16, index=True)  # spam | virus | attachment
    reason = pw.TextField(default="")
    created_at = pw.DateTimeField(default=utcnow, index=True)
    # held | released | deleted
    state = pw.CharField(max_length=16, default="held", index=True)
    handled_at = pw.DateTimeField(null=True)
    handled_by = pw.CharField(max_length=64, default="")


class BayesToken(BaseModel):
    """Counts of one hashed token in ham and spam training messages."""

    token = pw.BigIntegerField(primary_key=True)
    ham = pw.IntegerField(default=0)
    spam = pw.IntegerField(default=0)
    last_seen = pw.IntegerField(default=0)  # days since epoch


class BayesMeta(BaseModel):
    """Message totals and other global values of the Bayesian filter."""

    key = pw.CharField(max_length=32, primary_key=True)
    value = pw.BigIntegerField(default=0)


class SchemaVersion(BaseModel):
    """Applied migration scripts, one row each."""

    name = pw.CharField(max_length=128, primary_key=True)
    applied_at = pw.DateTimeField(default=utcnow)


MODELS = (
    AdminUser,
    Message,
    Recipient,
    QuarantineItem,
    BayesToken,
    BayesMeta,
    SchemaVersion,
)
