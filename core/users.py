"""Admin accounts, their passwords and API tokens, and the web signing key.

Passwords are stored as werkzeug hashes (scrypt). There is no default
password: the first account is made by ``portcullis init`` with a password
the operator gives or one generated and shown once. API tokens are shown
once when made; only their SHA-256 is kept.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import logging
import os
import re
import secrets
from pathlib import Path

from werkzeug.security import check_password_hash, generate_password_hash

from core.models import AdminUser, ApiToken, LoginAttempt, utcnow

log = logging.getLogger(__name__)

MIN_PASSWORD = 10
MAX_PASSWORD = 1024
USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
SECRET_KEY_FILE = "secret_key"

# A hash to check against when the user does not exist, so a wrong name takes
# as long as a wrong password and timing does not reveal which names exist.
# Made on first use: scrypt costs a noticeable moment at every CLI start.
_dummy_hash = ""


class UserError(Exception):
    """An account operation was refused; the text says why and what to do."""


def check_username(username: str) -> str:
    name = (username or "").strip()
    if not USERNAME_RE.match(name):
        raise UserError(
            f"user name {username!r} is not allowed: use 1-64 letters, digits "
            "and . _ @ - (starting with a letter or digit)"
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"the password must have at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise UserError(f"the password must have at most {MAX_PASSWORD} characters")
    return password


def generate_password() -> str:
    """A random password of 20 URL-safe characters (about 120 bits)."""
    return secrets.token_urlsafe(15)


def hash_password(password: str) -> str:
    return generate_password_hash(password, method="scrypt")


def create_user(username: str, password: str, role: str = "admin") -> AdminUser:
    """Create an account; raises UserError if the name is taken or bad."""
    name = check_username(username)
    check_password(password)
    if AdminUser.get_or_none(AdminUser.username == name) is not None:
        raise UserError(
            f"user {name!r} already exists; use 'portcullis user passwd {name}'"
        )
    user = AdminUser.create(username=name, password_hash=hash_password(password),
                            role=role)
    log.info("event=user_add user=%s role=%s", name, role)
    return user


def set_password(username: str, password: str) -> AdminUser:
    """Give an account a new password (its open sessions stop working)."""
    user = get_user(username)
    check_password(password)
    user.password_hash = hash_password(password)
    user.save()
    log.info("event=user_passwd user=%s", user.username)
    return user


def get_user(username: str) -> AdminUser:
    user = AdminUser.get_or_none(AdminUser.username == (username or "").strip())
    if user is None:
        raise UserError(
            f"there is no user {username!r}; 'portcullis user add' creates one"
        )
    return user


def authenticate(username: str, password: str) -> AdminUser | None:
    """The account if the password is right, else None (same time either way)."""
    user = AdminUser.get_or_none(AdminUser.username == (username or "").strip()[:64])
    if user is None:
        global _dummy_hash
        if not _dummy_hash:
            _dummy_hash = hash_password(secrets.token_hex(16))
        check_password_hash(_dummy_hash, password)
        return None
    if not check_password_hash(user.password_hash, password):
        return None
    user.last_login_at = utcnow()
    user.save()
    return user


def session_stamp(user: AdminUser) -> str:
    """Changes when the password changes, so old sessions are dropped."""
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]


# region login throttling


def recent_failures(client_ip: str, window: float) -> int:
    since = utcnow() - _dt.timedelta(seconds=window)
    return (LoginAttempt.select()
            .where(LoginAttempt.client_ip == client_ip, ~LoginAttempt.ok,
                   LoginAttempt.at >= since)
            .count())


def record_attempt(client_ip: str, username: str, ok: bool) -> None:
    LoginAttempt.create(client_ip=client_ip[:64], username=(username or "")[:64],
                        ok=ok)
    if ok:
        # A good login forgives this address its earlier mistakes.
        (LoginAttempt.delete()
         .where(LoginAttempt.client_ip == client_ip, ~LoginAttempt.ok)
         .execute())


def prune_attempts(older_than: float = 86400.0) -> int:
    cutoff = utcnow() - _dt.timedelta(seconds=older_than)
    return LoginAttempt.delete().where(LoginAttempt.at < cutoff).execute()


# endregion

# region API tokens


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def create_token(username: str, name: str = "") -> str:
    """Make an API token for a user; returns it (it cannot be shown again)."""
    user = get_user(username)
    token = "pct_" + secrets.token_urlsafe(32)
    ApiToken.create(user=user, name=name[:64], token_hash=_token_hash(token))
    log.info("event=token_add user=%s name=%s", user.username, name[:64])
    return token


def token_user(token: str) -> AdminUser | None:
    """The account a bearer token belongs to, or None."""
    if not token or len(token) > 256:
        return None
    digest = _token_hash(token)
    row = ApiToken.get_or_none(ApiToken.token_hash == digest)
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    row.last_used_at = utcnow()
    row.save()
    return row.user


# endregion


def secret_key(data_dir: Path | str, configured: str = "", create: bool = True
               ) -> str:
    """The session signing key: the configured one, else the file in data_dir.

    The file is made with mode 0600 the first time (by ``portcullis init``, or
    by the first web process if init was skipped). It is written in full
    under a temporary name and then hard-linked into place, which fails if
    the name exists, so concurrent first starts agree on one whole key.
    """
    if configured:
        return configured
    path = Path(data_dir) / SECRET_KEY_FILE
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        if not create:
            raise
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    tmp = path.with_name(f".{SECRET_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(key + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, path)
    except FileExistsError:
        return path.read_text(encoding="ascii").strip()
    finally:
        tmp.unlink(missing_ok=True)
    log.info("event=secret_key_created path=%s", path)
    return key
