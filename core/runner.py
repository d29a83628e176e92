"""The supervisor: one process tree for the whole gateway.

:func:`run` configures logging, opens and migrates the database, puts
claimed messages back (``Spool.recover``) and starts the children: the
SMTP server, ``workers`` filter workers, the delivery agent and the web
admin. A child that dies is started again after a pause that doubles
from one second up to half a minute. SIGTERM or SIGINT drains the tree in
order, so nothing accepted is left half-done: the SMTP server first (no
new connections, open transactions finish), then the workers (each
finishes its message), then delivery (in-flight transactions finish),
then the web admin; then the supervisor exits 0. Every half minute it
also puts back into ``incoming`` any message a dead filter worker left in
``filtering`` (the delivery process does the same for ``sending`` when it
starts, being the only one); a few seconds after a worker dies, the claims
it left (those no live worker holds a lock on) go back at once. The daily
expiry of old rare Bayes tokens runs in filter worker 0, which has the
database open (``core.pipeline.BayesExpiry``); the supervisor has none.

Before any child starts, every listen address is tried: one that cannot
be bound stops the start with a line naming its key. Each child asks the
kernel for SIGTERM when the supervisor dies, so a supervisor killed with
SIGKILL does not leave its children running unsupervised.

``python -m core.runner [--config FILE]`` runs it without the CLI.
"""

from __future__ import annotations

import argparse
import fcntl
import importlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable

from core import config, db, logsetup
from core.spool import Spool

log = logging.getLogger(__name__)

RESTART_FIRST = 1.0
RESTART_MAX = 30.0
# A child that ran this long before dying starts again without delay growth.
HEALTHY_AFTER = 60.0
# Seconds each stage may take to drain before it is killed.
DRAIN_SMTP = 60.0
DRAIN_WORKERS = 60.0
DRAIN_DELIVERY = 120.0
DRAIN_WEB = 15.0
SWEEP_EVERY = 30.0
# A message claimed by a filter worker longer ago than this is an orphan.
ORPHAN_AGE = 600.0
# After a worker died, claims this old that no live worker holds go back
# (younger ones may be a live worker's, between its claim and its lock).
ORPHAN_GRACE = 5.0


def _entry(module: str, name: str) -> Callable[..., Any] | None:
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        log.warning("event=part_missing module=%s reason=%s", module, exc)
        return None


def _set_process_name(name: str) -> None:
    """Name the process for ps and top (Linux PR_SET_NAME, 15 bytes)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, f"pc-{name}".encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _end_with_parent(parent: int) -> None:
    """SIGTERM this process when the supervisor dies (Linux PR_SET_PDEATHSIG).

    A supervisor killed with SIGKILL cannot drain its children; without
    this they would go on unsupervised, holding the data_dir lock, so no
    new gateway could start. SIGTERM lets each drain as it would anyway.
    """
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # it died before the call above took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _child(name: str, module: str, func: str, args: tuple, parent: int) -> None:
    _set_process_name(name)
    # The supervisor's handlers must not run in a child.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _end_with_parent(parent)
    target = getattr(importlib.import_module(module), func)
    target(*args)


class Child:
    """One supervised process and how to start it again."""

    def __init__(self, name: str, stage: str, module: str, func: str, args: tuple):
        self.name = name
        self.stage = stage  # smtp | workers | delivery | web: the drain order
        self.module = module
        self.func = func
        self.args = args
        self.process: multiprocessing.Process | None = None
        self.started_at = 0.0
        self.delay = RESTART_FIRST
        self.restart_at: float | None = None

    def start(self, context) -> None:
        self.process = context.Process(
            target=_child, name=f"portcullis-{self.name}",
            args=(self.name, self.module, self.func, self.args, os.getpid()),
            daemon=False)
        self.process.start()
        self.started_at = time.monotonic()
        self.restart_at = None
        log.info("event=child_start name=%s pid=%d", self.name, self.process.pid)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()


class Supervisor:
    """Starts the children, restarts the ones that die, drains on a signal."""

    def __init__(self, settings):
        self.settings = settings
        self.context = multiprocessing.get_context("fork")
        self.children: list[Child] = []
        self.stopping = False
        self.signals = 0
        self.orphans_at: float | None = None  # when to look for a dead worker's

    def plan(self) -> list[Child]:
        settings = self.settings
        children = []
        if _entry("core.smtp.server", "serve"):
            children.append(Child("smtp", "smtp", "core.smtp.server", "serve",
                                  (settings,)))
        for index in range(max(1, settings.workers)):
            children.append(Child(f"worker-{index}", "workers", "core.pipeline",
                                  "serve", (settings, index)))
        children.append(Child("delivery", "delivery", "core.delivery", "serve",
                              (settings,)))
        if settings.web_listen[0] and _entry("app.server", "serve"):
            children.append(Child("web", "web", "app.server", "serve", (settings,)))
        return children

    def on_signal(self, signum, _frame) -> None:
        self.signals += 1
        if not self.stopping:
            log.info("event=shutdown signal=%s", signal.Signals(signum).name)
        self.stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        self.children = self.plan()
        for child in self.children:
            child.start(self.context)
        swept = time.monotonic()
        while not self.stopping:
            self.watch()
            if time.monotonic() - swept > SWEEP_EVERY:
                self.sweep()
                swept = time.monotonic()
            if self.orphans_at is not None and time.monotonic() >= self.orphans_at:
                self.orphans_at = None
                self.sweep(after_death=True)
            time.sleep(0.2)
        self.drain()
        log.info("event=stopped")
        return 0

    def watch(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.alive:
                continue
            if child.restart_at is None:
                code = child.process.exitcode if child.process else None
                if now - child.started_at > HEALTHY_AFTER:
                    child.delay = RESTART_FIRST
                child.restart_at = now + child.delay
                log.error("event=child_died name=%s exitcode=%s restart_in=%.0f",
                          child.name, code, child.delay)
                if child.stage == "workers":
                    self.orphans_at = now + ORPHAN_GRACE
                child.delay = min(RESTART_MAX, child.delay * 2)
            elif now >= child.restart_at and not self.stopping:
                child.start(self.context)

    def sweep(self, after_death: bool = False) -> None:
        """Put back messages left in ``filtering`` by a worker that died.

        A live worker holds a message for seconds; one untouched for
        ``ORPHAN_AGE`` was claimed by a worker that is gone (the rename
        into ``filtering`` set its ctime). Just after a worker died, a
        claim older than ``ORPHAN_GRACE`` that no process holds a lock on
        (``Spool.hold``) is the dead worker's and goes back at once.
        """
        spool = Spool(self.settings.data_dir)
        now = time.time()
        for qid in spool.list("filtering"):
            try:
                changed = os.stat(spool.path("filtering", qid)).st_ctime
            except FileNotFoundError:
                continue
            orphan = changed < now - ORPHAN_AGE or (
                after_death and changed < now - ORPHAN_GRACE
                and spool.unheld("filtering", qid))
            if orphan and spool.claim(qid, "filtering", "incoming"):
                log.warning("%s event=orphan_requeued state=filtering", qid)

    def drain(self) -> None:
        for stage, limit in (("smtp", DRAIN_SMTP), ("workers", DRAIN_WORKERS),
                             ("delivery", DRAIN_DELIVERY), ("web", DRAIN_WEB)):
            group = [c for c in self.children if c.stage == stage and c.alive]
            for child in group:
                os.kill(child.process.pid, signal.SIGTERM)
            deadline = time.monotonic() + limit
            for child in group:
                while child.alive and time.monotonic() < deadline \
                        and self.signals < 3:
                    child.process.join(0.1)
                if child.alive:
                    # A third signal, or the stage overran: no more waiting.
                    log.warning("event=child_killed name=%s", child.name)
                    child.process.kill()
                    child.process.join(5)
            if group:
                log.info("event=drained stage=%s", stage)


def _address(hostport: tuple[str, int]) -> str:
    host, port = hostport
    if not host:
        return "off"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def banner(settings) -> str:
    """The start-up lines: where the gateway listens and where it relays."""
    return "\n".join([
        f"portcullis: smtp in   {_address(settings.smtp_listen_in)}",
        f"portcullis: smtp out  {_address(settings.smtp_listen_out)}",
        f"portcullis: web admin {_address(settings.web_listen)}",
        f"portcullis: downstream {_address(settings.downstream)}"
        f", workers {settings.workers}, data {settings.data_dir}",
    ])


def busy_listeners(settings) -> list[str]:
    """One line for each listen address that cannot be bound now.

    Checked before any child starts: a child that cannot bind would die
    and be restarted for ever, while the banner claimed it listens.
    """
    problems = []
    for key in ("smtp_listen_in", "smtp_listen_out", "web_listen"):
        host, port = getattr(settings, key)
        if not host:
            continue
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # As the listeners themselves do, so a port in TIME_WAIT is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                problems.append(
                    f"cannot listen on {_address((host, port))} ({key}): "
                    f"{exc.strerror or exc}; stop what holds it or set {key}")
    return problems


def lock_data_dir(settings):
    """Hold an exclusive lock on the data directory for this process's life.

    Two gateways on one spool would each recover and deliver the other's
    messages (double delivery); the second one must refuse to start.
    Returns the open lock file, or None when another gateway holds it.
    """
    path = Path(settings.data_dir)
    path.mkdir(parents=True, exist_ok=True)
    handle = open(path / "portcullis.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _check_clamd(settings) -> None:
    # Mail still flows into the queue without clamd; say so once, at start,
    # rather than only when the first message is held back.
    if not settings.virus_scan:
        return
    from core.filters.virus import ScannerUnavailable, VirusScanner

    try:
        VirusScanner(settings).ping()
    except ScannerUnavailable as exc:
        log.warning("event=clamd_unreachable reason=%s action=mail_stays_queued "
                    "fail_open=%s", logsetup.scrub(exc), settings.virus_fail_open)


def run(settings) -> int:
    """Run the whole gateway until SIGTERM/SIGINT; returns the exit status."""
    logsetup.configure(settings.log_level, settings.log_file)
    lock = lock_data_dir(settings)
    if lock is None:
        print(f"portcullis: another gateway is running on data_dir "
              f"{settings.data_dir}; stop it first (or give this one its own "
              f"data_dir)", file=sys.stderr)
        return 1
    problems = busy_listeners(settings)
    if problems:
        for line in problems:
            print(f"portcullis: {line}", file=sys.stderr)
        return 1
    database = db.open_database(settings.database_url)
    applied = db.migrate(database)
    if applied:
        log.info("event=migrated scripts=%s", ",".join(applied))
    database.close()

    _check_clamd(settings)
    counts = Spool(settings.data_dir).recover()
    log.info("event=recovered %s", " ".join(f"{k}={v}" for k, v in counts.items()))
    print(banner(settings), flush=True)
    return Supervisor(settings).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.runner",
                                     description="Run the Portcullis gateway.")
    parser.add_argument("--config", help="TOML config file (else the usual places)")
    args = parser.parse_args(argv)
    try:
        settings = config.load(args.config)
    except config.ConfigError as exc:
        print(f"portcullis: {exc}", file=sys.stderr)
        return 2
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
