"""The blueprint for people: server-rendered pages behind a login."""

from flask import Blueprint

bp = Blueprint("ui", __name__)

# The view modules add their routes to ``bp`` when imported.
from app.views import auth, dashboard, quarantine, tracking  # noqa: E402,F401
