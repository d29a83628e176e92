"""Who may call what: sessions, API tokens, CSRF tokens, error pages.

Every view carries one of three decorators, which also records its rule on
the function (``view.access``) for the access audit test:

* ``@public``: anyone (the login page, static files);
* ``@login_required``: a person with a session, else a redirect to login;
* ``@api_auth``: a session or an ``Authorization: Bearer`` token, else 401.

Every POST, PUT, PATCH and DELETE that comes with the session cookie must
carry the session's CSRF token (form field ``csrf_token`` or header
``X-CSRF-Token``). Bearer-token requests need none: a browser never adds
that header by itself.
"""

from __future__ import annotations

import functools
import hmac
import logging
import secrets

from flask import (Flask, current_app, g, jsonify, redirect, render_template, request,
                   session, url_for)
from werkzeug.exceptions import HTTPException

from core import models
from core.models import AdminUser
from core.users import session_stamp, token_user

log = logging.getLogger(__name__)

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

# No script, no inline style, nothing from elsewhere: a message shown here
# cannot run anything even if escaping failed somewhere.
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def public(view):
    view.access = "public"
    return view


def login_required(view):
    """Pages for people: without a session, go to the login page."""

    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if g.user is None:
            return redirect(url_for("ui.auth_login", next=_next_target()))
        return view(*args, **kwargs)

    wrapped.access = "login"
    return wrapped


def api_auth(view):
    """API calls: a session or a bearer token, else 401 with a JSON message."""

    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if g.user is None:
            return api_error(401, "log in, or send 'Authorization: Bearer <token>' "
                                  "(portcullis user token NAME makes one)")
        return view(*args, **kwargs)

    wrapped.access = "api"
    return wrapped


def api_error(status: int, message: str):
    response = jsonify({"error": message, "status": status})
    response.status_code = status
    return response


def local_path(target: str | None) -> str | None:
    """``target`` if it is a path on this site, else None.

    "//host" and "/\\host" are other sites to a browser, so a redirect to
    them after login or after a button would send the admin elsewhere.
    """
    if not target or not target.startswith("/") or target.startswith("//"):
        return None
    if "\\" in target or any(ord(ch) < 32 for ch in target):
        return None
    return target


def _next_target() -> str:
    path = request.full_path if request.query_string else request.path
    return local_path(path) or "/"


def csrf_token() -> str:
    """This session's CSRF token, made on first use."""
    token = session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def _load_user() -> None:
    g.user = None
    g.via_token = False
    token = _bearer()
    if token is not None and request.blueprint == "api":
        # A token request ignores any cookie, so it needs no CSRF token.
        g.user = token_user(token)
        g.via_token = True
        return
    user_id = session.get("user_id")
    if user_id is None:
        return
    user = AdminUser.get_or_none(AdminUser.id == user_id)
    if user is None or session.get("stamp") != session_stamp(user):
        session.clear()  # account gone or password changed since login
        return
    g.user = user


def _check_csrf():
    if request.method in SAFE_METHODS or g.via_token:
        return None
    view = current_app.view_functions.get(request.endpoint)
    if g.user is None and getattr(view, "access", None) != "public":
        return None  # the view's decorator turns the caller away anyway
    sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token", "")
    expected = session.get("csrf", "")
    if expected and sent and hmac.compare_digest(str(sent), str(expected)):
        return None
    log.warning("event=csrf_refused path=%s ip=%s", request.path, request.remote_addr)
    message = "the form was stale or not sent from this site; reload and retry"
    if request.blueprint == "api":
        return api_error(400, "missing or wrong X-CSRF-Token header: " + message)
    return render_template("error.html", status=400, message=message), 400


def _before():
    models.db.connect(reuse_if_open=True)
    _load_user()
    return _check_csrf()


def _teardown(exc):
    if not models.db.is_closed():
        models.db.close()


def _headers(response):
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if request.endpoint != "static":
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def _http_error(exc: HTTPException):
    if request.path.startswith("/api/"):
        return api_error(exc.code or 500, exc.description or exc.name)
    status = exc.code or 500
    return render_template("error.html", status=status,
                           message=exc.description or exc.name), status


def _server_error(exc: Exception):
    log.exception("event=web_error path=%s", request.path)
    message = "something went wrong on the server; the log says what"
    if request.path.startswith("/api/"):
        return api_error(500, message)
    return render_template("error.html", status=500, message=message), 500


def init_app(app: Flask) -> None:
    app.before_request(_before)
    app.teardown_appcontext(_teardown)
    app.after_request(_headers)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _server_error)
    app.jinja_env.globals["csrf_token"] = csrf_token
