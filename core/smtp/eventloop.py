"""The event loop of the SMTP listener and of delivery: uvloop when present.

uvloop (libuv under the asyncio API) spends far less CPU per socket read,
write and callback than asyncio's own loop, and the SMTP and delivery
processes are mostly that. Without it the standard loop runs the same
code: nothing else changes.
"""

from __future__ import annotations

import asyncio
from typing import Any, Coroutine

try:
    import uvloop
except ImportError:  # the standard loop does the same work, with more CPU
    uvloop = None


def name() -> str:
    """``uvloop`` or ``asyncio``: which loop :func:`new_loop` gives."""
    return "uvloop" if uvloop is not None else "asyncio"


def new_loop() -> asyncio.AbstractEventLoop:
    """A fresh event loop of the fastest kind available."""
    if uvloop is not None:
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run(main: Coroutine[Any, Any, Any]) -> Any:
    """``asyncio.run(main)`` on a loop from :func:`new_loop`."""
    with asyncio.Runner(loop_factory=new_loop) as runner:
        return runner.run(main)
