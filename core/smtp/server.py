"""The SMTP process: listeners, durable storing, and a clean drain.

``start_servers`` binds ``smtp_listen_in`` (direction "in") and
``smtp_listen_out`` (direction "out", off when empty) on the running loop.
``serve`` is the blocking entry the runner calls: it opens the database,
builds the spool and the policy, runs until SIGTERM (or SIGINT) and drains.

A message is answered 250 only after it is written and fsynced, file and
directory (``Spool.store_batch``), by the :class:`Committer` thread, so
the event loop never waits on the disk; messages accepted at the same time
are stored in one batch with one directory fsync. The loop is uvloop's
where it is installed (``core.smtp.eventloop``).

Limits: the files of a batch are fsynced one after another in that one
thread, so the accept rate is bounded by the disk's fsync time (about
0.3 ms here, some 3,000 messages/s); a slow disk delays every 250 alike.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import threading
import time
from typing import Any

from core import tracking
from core.smtp import eventloop
from core.smtp.address import domain_key
from core.smtp.handler import SmtpSession
from core.smtp.tls import server_context

log = logging.getLogger(__name__)

# Below the runner's 60 s for the smtp stage, so the drain ends on its own.
DRAIN_TIMEOUT = 45.0
# Messages made durable together at most (one directory fsync for them).
STORE_BATCH = 64


class Committer:
    """One thread that stores accepted messages in batches (group commit).

    While it writes and fsyncs one batch, the messages of other sessions
    queue up and go into the next: one wake-up of the thread, one directory
    fsync and one call back into the loop for many messages, where a pool
    of threads took all three for each message.
    """

    def __init__(self, spool, loop: asyncio.AbstractEventLoop):
        self.spool = spool
        self.loop = loop
        self._queue: list[tuple[Any, bytes, asyncio.Future]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="spool-store",
                                        daemon=True)
        self._thread.start()

    def submit(self, envelope, data: bytes) -> asyncio.Future:
        """A future that is done once the message is durable (or failed)."""
        future = self.loop.create_future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the store is closed")
            self._queue.append((envelope, data, future))
            self._cond.notify()
        return future

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                batch = self._queue[:STORE_BATCH]
                del self._queue[:STORE_BATCH]
            try:
                results = self.spool.store_batch([(e, d) for e, d, _ in batch])
            except Exception as exc:  # never leave a session waiting
                results = [exc] * len(batch)
            try:
                self.loop.call_soon_threadsafe(self._settle, batch, results)
            except RuntimeError:
                return  # the loop is closed: nobody waits for these any more

    @staticmethod
    def _settle(batch, results) -> None:
        for (_envelope, _data, future), error in zip(batch, results):
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

    def close(self) -> None:
        """Store what is queued, then end the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()


class SmtpService:
    """The running listeners and their sessions."""

    def __init__(self, settings, spool, policy, loop: asyncio.AbstractEventLoop):
        self.settings = settings
        self.spool = spool
        self.policy = policy
        self.loop = loop
        self.tls_context = server_context(settings)
        self.relay_domains = frozenset(domain_key(d) for d in settings.relay_domains)
        self.sessions: set[SmtpSession] = set()
        self.servers: list[asyncio.AbstractServer] = []
        # direction -> (host, port) actually bound (port 0 picks a free one).
        self.addresses: dict[str, tuple[str, int]] = {}
        self.draining = False
        self._tasks: set[asyncio.Task] = set()
        self._committer = Committer(spool, loop)

    async def start(self) -> None:
        for direction, (host, port) in (("in", self.settings.smtp_listen_in),
                                        ("out", self.settings.smtp_listen_out)):
            if not host:
                continue
            server = await self.loop.create_server(
                lambda d=direction: SmtpSession(self, d), host, port,
                backlog=512, reuse_address=True)
            self.servers.append(server)
            sockname = server.sockets[0].getsockname()
            self.addresses[direction] = (sockname[0], sockname[1])
            log.info("event=listen direction=%s host=%s port=%d", direction,
                     sockname[0], sockname[1])

    def port(self, direction: str = "in") -> int:
        return self.addresses[direction][1]

    # region sessions and storing

    def session_opened(self, session: SmtpSession) -> None:
        self.sessions.add(session)

    def session_closed(self, session: SmtpSession) -> None:
        if session not in self.sessions:
            return
        self.sessions.discard(session)
        info = session.info
        log.info("%s event=disconnect commands=%d accepted=%d bad=%d seconds=%.1f",
                 info.peer_ip if info else session.front_ip, session.commands,
                 session.accepted, session.bad_lines,
                 time.monotonic() - session.connected_at)
        hook = getattr(self.policy, "on_disconnect", None)
        if info is not None and hook is not None:
            self._track(self.loop.create_task(self._disconnect(hook, info)))

    async def _disconnect(self, hook, info) -> None:
        try:
            await hook(info)
        except Exception:
            log.exception("%s event=policy_error hook=on_disconnect", info.peer_ip)

    def _track(self, task: asyncio.Task) -> asyncio.Task:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def store(self, envelope, data: bytes) -> None:
        """Write the message durably; shielded, so a client that hangs up
        mid-store cannot leave a half-known message behind."""
        task = self._track(self.loop.create_task(self._store(envelope, data)))
        await asyncio.shield(task)

    async def _store(self, envelope, data: bytes) -> None:
        await self._committer.submit(envelope, data)
        # Debug only: the handler's event=queued line follows at once.
        log.debug("%s event=stored recipients=%d size=%d", envelope.qid,
                  len(envelope.recipients), envelope.size)

    # endregion

    async def drain(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """Stop accepting, let open transactions finish (up to ``timeout``
        seconds), then close everything."""
        self.draining = True
        for server in self.servers:
            server.close()
        log.info("event=drain sessions=%d timeout=%.0f", len(self.sessions), timeout)
        for session in list(self.sessions):
            session.shutdown_if_idle()
        deadline = time.monotonic() + timeout
        while self.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            for session in list(self.sessions):
                session.shutdown_if_idle()
        for session in list(self.sessions):
            log.info("%s event=drain_abort", session.prefix())
            session.abort()
        # Stores always finish: a message on its way to disk is kept.
        while self._tasks:
            await asyncio.wait(list(self._tasks), timeout=max(1.0, timeout))
        for server in self.servers:
            await server.wait_closed()
        await asyncio.to_thread(self._committer.close)
        close = getattr(self.policy, "close", None)
        if close is not None:
            outcome = close()
            if inspect.isawaitable(outcome):
                await outcome
        log.info("event=drained")


async def start_servers(settings, spool, policy) -> SmtpService:
    """Bind the listeners on the running loop and return the service."""
    service = SmtpService(settings, spool, policy, asyncio.get_running_loop())
    await service.start()
    return service


async def build_policy(settings):
    """``core.policy.build(settings)`` where it exists, else the no-op Policy."""
    import core.policy as package

    build = getattr(package, "build", None)
    if build is None:
        from core.policy.base import Policy

        return Policy()
    policy = build(settings)
    if inspect.isawaitable(policy):
        policy = await policy
    return policy


async def run(settings, stop: asyncio.Event | None = None,
              drain_timeout: float = DRAIN_TIMEOUT) -> None:
    """Open the database, serve until SIGTERM/SIGINT (or ``stop``), drain."""
    from core.db import open_database
    from core.spool import Spool

    open_database(settings.database_url)
    spool = Spool(settings.data_dir)
    policy = await build_policy(settings)
    service = await start_servers(settings, spool, policy)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread: the caller sets ``stop`` itself
    await stop.wait()
    await service.drain(drain_timeout)
    tracking.flush()


def serve(settings) -> None:
    """Blocking entry for the runner's smtp process."""
    log.info("event=smtp_start loop=%s", eventloop.name())
    eventloop.run(run(settings))
