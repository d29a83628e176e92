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
    bayes_probability = pw.DoubleField(null=True)  # None: Bayes gave no score
    # JSON of the Bayes clues, URI blocklist hits and note; "" on older rows.
    spam_clues = pw.TextField(default="")
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
    last_seen = pw.IntegerField(default=0, index=True)  # days since epoch
    weight = pw.DoubleField(default=0.0)  # logistic-regression weight


class BayesMeta(BaseModel):
    """Message totals and other global values of the Bayesian filter."""

    key = pw.CharField(max_length=32, primary_key=True)
    value = pw.BigIntegerField(default=0)


class BayesSeen(BaseModel):
    """A message the Bayesian filter learned, so it is not counted twice."""

    digest = pw.CharField(max_length=64, primary_key=True)  # sha256 hex
    spam = pw.BooleanField()
    day = pw.IntegerField(default=0)  # days since epoch


class BayesModel(BaseModel):
    """A model of the Bayesian filter kept whole: the 4-gram weight array."""

    name = pw.CharField(max_length=32, primary_key=True)
    version = pw.BigIntegerField(default=0)  # bumped by every write
    data = pw.BlobField()  # zlib of the float32 weights, little-endian


class LoginAttempt(BaseModel):
    """One web admin login attempt, kept to slow down password guessing."""

    client_ip = pw.CharField(max_length=64, index=True)
    username = pw.CharField(max_length=64, default="")
    ok = pw.BooleanField(default=False)
    at = pw.DateTimeField(default=utcnow, index=True)


class ApiToken(BaseModel):
    """A bearer token for the JSON API; only its SHA-256 is stored."""

    user = pw.ForeignKeyField(AdminUser, backref="tokens", on_delete="CASCADE")
    name = pw.CharField(max_length=64, default="")
    token_hash = pw.CharField(max_length=64, unique=True)
    created_at = pw.DateTimeField(default=utcnow)
    last_used_at = pw.DateTimeField(null=True)


class PolicySetting(BaseModel):
    """One SMTP-time policy knob (``spf.enabled``...); value is JSON text."""

    key = pw.CharField(max_length=64, primary_key=True)
    value = pw.TextField()
    updated_at = pw.DateTimeField(default=utcnow)


class PolicyListEntry(BaseModel):
    """A block/welcome list entry: address, domain, *.domain, /regex/ or net."""

    # smtp_welcome (skips SMTP-time checks) | welcome | block
    list_name = pw.CharField(max_length=16, index=True)
    kind = pw.CharField(max_length=16)  # sender | recipient | client
    pattern = pw.TextField()
    comment = pw.TextField(default="")
    created_at = pw.DateTimeField(default=utcnow)


class GreylistTriplet(BaseModel):
    """A (client network, sender, recipient) seen by greylisting; unix times."""

    network = pw.CharField(max_length=64)
    sender = pw.TextField()
    recipient = pw.TextField()
    first_seen = pw.FloatField()
    last_seen = pw.FloatField(index=True)
    passed_at = pw.FloatField(null=True)
    attempts = pw.IntegerField(default=1)

    class Meta:
        indexes = ((("network", "sender", "recipient"), True),)


class PolicyCounter(BaseModel):
    """How often a check gave a result on a day (UTC), for the stats page."""

    day = pw.DateField()
    check_name = pw.CharField(max_length=32)
    result = pw.CharField(max_length=32)
    count = pw.IntegerField(default=0)

    class Meta:
        indexes = ((("day", "check_name", "result"), True),)


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
    BayesSeen,
    BayesModel,
    LoginAttempt,
    ApiToken,
    PolicySetting,
    PolicyListEntry,
    GreylistTriplet,
    PolicyCounter,
    SchemaVersion,
)
