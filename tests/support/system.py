"""Finding the real system parts tests need (clamd, Postfix tools, Chromium).

Where a part is missing a test skips with the reason; under CI (CI=true) the
same absence fails the run, because CI installs everything in .ci/run.
"""

from __future__ import annotations

import os
import shutil
import socket

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(available: bool, what: str) -> None:
    """Skip (locally) or fail (in CI) unless ``available``."""
    if available:
        return
    message = f"{what} is not available; .ci/run installs it"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def need_program(name: str, *paths: str) -> str:
    """The path of an executable, from PATH or the given places."""
    found = shutil.which(name) or next(
        (p for p in paths if os.path.exists(p) and os.access(p, os.X_OK)), None
    )
    need(found is not None, f"program {name!r}")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
