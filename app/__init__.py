"""The web admin: Flask application factory.

Blueprints by audience: ``ui`` (server-rendered pages for people) and
``api`` (JSON under /api/v1 for scripts). Every view declares who may call
it (see app/access.py); tests/test_access_audit.py walks the URL map and
proves it.

Limits: the client address for login throttling is the TCP peer; behind a
reverse proxy every client shares the proxy's address. The session cookie
is not marked Secure unless ``SESSION_COOKIE_SECURE`` is set, because the
admin listens on plain HTTP on loopback by default.
"""

from __future__ import annotations

import datetime as _dt
import logging

from flask import Flask

from core import config as _config
from core import db as _db
from core.spool import Spool
from core.users import secret_key

log = logging.getLogger(__name__)


def create_app(settings: _config.Settings | None = None,
               test_config: dict | None = None) -> Flask:
    """Build the admin app for ``settings`` (loaded from the config if None)."""
    settings = settings or _config.load()
    app = Flask(__name__)

    app.config.from_mapping(
        SECRET_KEY=secret_key(settings.data_dir, settings.secret_key),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_NAME="portcullis_session",
        PERMANENT_SESSION_LIFETIME=_dt.timedelta(hours=8),
        MAX_CONTENT_LENGTH=1024 * 1024,
        # Failed logins from one address in LOGIN_WINDOW seconds before the
        # address is refused, and the pause after each failure.
        LOGIN_MAX_FAILURES=10,
        LOGIN_WINDOW=900,
        LOGIN_FAIL_DELAY=1.0,
        PAGE_SIZE=50,
    )
    if test_config:
        app.config.from_mapping(test_config)

    database = _db.open_database(settings.database_url)
    missing = _db.pending(database)
    if missing:
        raise RuntimeError(
            f"the database at {settings.database_url} lacks migrations "
            f"{', '.join(missing)}; run 'portcullis init' first"
        )
    if not database.is_closed():
        database.close()
    app.extensions["portcullis"] = {
        "settings": settings,
        "spool": Spool(settings.data_dir),
        "database": database,
    }

    from app import access, filters
    from app.views import api, ui

    access.init_app(app)
    filters.init_app(app)
    app.register_blueprint(ui.bp)
    app.register_blueprint(api.bp)
    return app


def settings_of(app: Flask) -> _config.Settings:
    return app.extensions["portcullis"]["settings"]


def spool_of(app: Flask) -> Spool:
    return app.extensions["portcullis"]["spool"]
