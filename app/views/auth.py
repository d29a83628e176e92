"""Logging in and out of the web admin."""

from __future__ import annotations

import logging
import time

from flask import (current_app, flash, g, redirect, render_template, request,
                   session, url_for)

from app.access import csrf_token, local_path, login_required, public
from app.views.ui import bp
from core.logsetup import scrub
from core.users import (authenticate, prune_attempts, recent_failures,
                        record_attempt, session_stamp)

log = logging.getLogger(__name__)


def _safe_next(target: str | None) -> str:
    return local_path(target) or url_for("ui.dashboard_index")


def _login_page(status: int):
    return render_template("auth/login.html", next=request.form.get("next", "")), status


def _log_attempt(username: str, ip: str, result: str, reason: str) -> None:
    log.info("event=login user=%s ip=%s result=%s reason=%s",
             scrub(username, 64), ip, result, reason)


@bp.route("/login", methods=("GET", "POST"))
@public
def auth_login():
    """Show the login form and check what it sends."""
    if request.method == "GET":
        if g.user is not None:
            return redirect(_safe_next(request.args.get("next")))
        csrf_token()
        return render_template("auth/login.html", next=request.args.get("next", ""))

    ip = request.remote_addr or "unknown"
    username = request.form.get("username", "")[:64]
    password = request.form.get("password", "")
    config = current_app.config

    window = config["LOGIN_WINDOW"]
    if recent_failures(ip, window) >= config["LOGIN_MAX_FAILURES"]:
        _log_attempt(username, ip, "refused", "too_many_failures")
        minutes = max(1, int(window // 60))
        flash(f"Too many failed logins from your address. Wait {minutes} minutes, "
              "then try again.", "error")
        return _login_page(429)

    user = authenticate(username, password) if username and password else None
    if user is None:
        record_attempt(ip, username, ok=False)
        _log_attempt(username, ip, "fail", "bad_credentials" if password else "empty")
        time.sleep(config["LOGIN_FAIL_DELAY"])
        flash("Wrong user name or password.", "error")
        return _login_page(401)

    record_attempt(ip, username, ok=True)
    prune_attempts()
    _log_attempt(user.username, ip, "ok", "password")
    # A new session on login, so a token planted before it is worthless.
    session.clear()
    session.permanent = True
    session["user_id"] = user.id
    session["stamp"] = session_stamp(user)
    csrf_token()
    return redirect(_safe_next(request.form.get("next")))


@bp.route("/logout", methods=("POST",))
@login_required
def auth_logout():
    """End the session."""
    log.info("event=logout user=%s ip=%s", scrub(g.user.username, 64),
             request.remote_addr)
    session.clear()
    flash("You are logged out.", "info")
    return redirect(url_for("ui.auth_login"))
