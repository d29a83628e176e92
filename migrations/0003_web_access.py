"""Web admin access: failed-login records (for throttling) and API tokens."""

import datetime

import peewee as pw


def _now():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def up(database):
    # Frozen copies of the models as this step creates them.
    class Base(pw.Model):
        class Meta:
            legacy_table_names = False

    class AdminUser(Base):
        username = pw.CharField(max_length=64, unique=True)

    class LoginAttempt(Base):
        client_ip = pw.CharField(max_length=64, index=True)
        username = pw.CharField(max_length=64, default="")
        ok = pw.BooleanField(default=False)
        at = pw.DateTimeField(default=_now, index=True)

    class ApiToken(Base):
        user = pw.ForeignKeyField(AdminUser, on_delete="CASCADE")
        name = pw.CharField(max_length=64, default="")
        token_hash = pw.CharField(max_length=64, unique=True)
        created_at = pw.DateTimeField(default=_now)
        last_used_at = pw.DateTimeField(null=True)

    tables = [LoginAttempt, ApiToken]
    with database.bind_ctx([AdminUser, *tables]):
        database.create_tables(tables)
