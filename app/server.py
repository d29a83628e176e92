"""Serving the web admin under gunicorn (the runner calls ``serve`` in a child).

Each gunicorn worker builds its own app (no preload), so no database
connection is shared across fork.
"""

from __future__ import annotations

import logging

from gunicorn.app.base import BaseApplication

from core import logsetup
from core.config import Settings

log = logging.getLogger(__name__)


def bind_address(settings: Settings) -> str:
    """``host:port`` for gunicorn, brackets around an IPv6 host."""
    host, port = settings.web_listen
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}"


class AdminServer(BaseApplication):
    """gunicorn with our options and our app factory, no command line."""

    def __init__(self, settings: Settings, options: dict | None = None):
        self.settings = settings
        self.options = {
            "bind": bind_address(settings),
            "workers": max(1, settings.web_workers),
            "worker_class": "sync",
            "timeout": 60,
            "graceful_timeout": 10,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": settings.log_level,
            "proc_name": "portcullis-web",
            # Limits on what a client may send before Flask sees it.
            "limit_request_line": 8190,
            "limit_request_fields": 100,
            "forwarded_allow_ips": "",
            # gunicorn's control socket would sit in $HOME, shared by every
            # instance on the machine; nothing of ours uses it.
            "control_socket_disable": True,
            **(options or {}),
        }
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key, value)

    def load(self):
        from app import create_app

        return create_app(self.settings)


def serve(settings: Settings, options: dict | None = None) -> None:
    """Run the web admin on ``settings.web_listen``; blocks until stopped."""
    if not logging.getLogger().handlers:
        # A child started with "spawn" does not inherit the runner's handlers.
        logsetup.configure(settings.log_level, settings.log_file)
    log.info("event=web_start listen=%s workers=%d", bind_address(settings),
             max(1, settings.web_workers))
    AdminServer(settings, options).run()
