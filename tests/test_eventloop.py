"""The event loop helper: uvloop when importable, asyncio's loop otherwise."""

from __future__ import annotations

import asyncio

from core.smtp import eventloop


def test_run_returns_the_result_on_the_chosen_loop():
    async def which() -> str:
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop()).__module__

    module = eventloop.run(which())
    assert module.startswith("uvloop" if eventloop.name() == "uvloop" else "asyncio")


def test_falls_back_to_asyncio_without_uvloop(monkeypatch):
    monkeypatch.setattr(eventloop, "uvloop", None)
    assert eventloop.name() == "asyncio"
    loop = eventloop.new_loop()
    try:
        assert isinstance(loop, asyncio.BaseEventLoop)
    finally:
        loop.close()
