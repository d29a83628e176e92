"""The SMTP service on an event loop in a background thread.

For callers that are not asyncio programs themselves: the test suite, the
benchmark in ``bench/``, tools. Production uses ``core.smtp.server.serve``.

    with ServiceThread(settings, spool, policy) as smtp:
        smtplib.SMTP("127.0.0.1", smtp.port("in"))
"""

from __future__ import annotations

import asyncio
import threading

from core.smtp import eventloop
from core.smtp.server import SmtpService, start_servers


class ServiceThread:
    def __init__(self, settings, spool, policy=None):
        if policy is None:
            from core.policy.base import Policy

            policy = Policy()
        self.settings = settings
        self.spool = spool
        self.policy = policy
        self.loop = eventloop.new_loop()
        self.service: SmtpService | None = None
        self._thread = threading.Thread(target=self._run, name="smtp-service",
                                        daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.service = self.loop.run_until_complete(
                start_servers(self.settings, self.spool, self.policy))
        except BaseException as error:  # reported to the starting thread
            self._error = error
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    def start(self) -> "ServiceThread":
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def port(self, direction: str = "in") -> int:
        return self.service.port(direction)

    def call(self, coroutine, timeout: float = 30.0):
        """Run a coroutine on the service's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self, drain_timeout: float = 5.0) -> None:
        if self.service is not None and self.loop.is_running():
            self.call(self.service.drain(drain_timeout), drain_timeout + 30)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)

    def __enter__(self) -> "ServiceThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
