"""The SMTP process: listeners, durable storing, and a clean drain.

``start_servers`` binds ``smtp_listen_in`` (direction "in") and
``smtp_listen_out`` (direction "out", off when empty) on the running loop.
``serve`` is the blocking entry the runner calls: it opens the database,
builds the spool and the policy, runs until SIGTERM (or SIGINT) and drains.

A message is answered 250 only after ``Spool.store_new`` has returned
(written and fsynced), which runs in a thread pool so the event loop never
waits on the disk.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import signal
import time

from core import tracking
from core.smtp.address import domain_key
from core.smtp.handler import SmtpSession
from core.smtp.tls import server_context

log = logging.getLogger(__name__)

# Below the runner's 60 s for the smtp stage, so the drain ends on its own.
DRAIN_TIMEOUT = 45.0
STORE_THREADS = 16


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
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=STORE_THREADS, thread_name_prefix="spool-store")

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
        await self.loop.run_in_executor(self._executor, self.spool.store_new,
                                        envelope, data)
        log.info("%s event=stored recipients=%d size=%d", envelope.qid,
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
        self._executor.shutdown(wait=True)
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
    asyncio.run(run(settings))
