"""Filter workers: take accepted mail from the spool, judge it, pass it on.

Each worker is a process running :func:`serve`. It claims the oldest
message in ``incoming`` (a rename, so two workers never take the same
one), parses it, has clamd and the Bayes filter look at it, asks
:func:`core.decision.decide` what to do, and then moves it on: into
``deliver`` with verdict headers, into the quarantine, or back into
``incoming`` for a later try when a scanner is down. clamd (another
process) scans up to ``SCAN_AHEAD`` messages of a worker while the worker
runs the Bayes check and the decision on the oldest of them (each message
is sent to clamd when it is parsed and its answer read when it is judged,
so no thread is needed), and up to
``BATCH`` messages are made durable together (one directory fsync).
A worker that dies half-way leaves its messages in ``filtering``, where
the supervisor's sweep (at once: a live worker holds a lock on each of its
claims, ``Spool.hold``) or ``Spool.recover`` finds them.

Worker 0 also expires old rare Bayes tokens (:class:`BayesExpiry`, the
supervisor holds no database): ``EXPIRE_FIRST`` seconds after it starts,
then once a day; a run that fails is logged and tried again
``EXPIRE_RETRY`` seconds later; with ``bayes_expire_days`` 0 or the Bayes
filter off it does not run. The other workers' filters see the expiry at
their next reload (``bayes_reload_seconds``).

Each stage logs one line at debug level; at info level a message gets its
closing line (``event=filtered`` with the verdict, the rule and the time
spent per analyser) and a line for each quarantine, infection or retry.

Limits: a message whose scan keeps failing (clamd down) is retried every
``filter_retry`` seconds with no end; it is never bounced for that. A
spool file whose envelope line cannot be read is logged and left in
``filtering`` (the sweep hands it back every ten minutes).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import secrets
import signal
import time
from pathlib import Path
from typing import Any, Callable

from core import decision as decision_mod
from core import tracking
from core.logsetup import scrub
from core.message import ParsedMessage
from core.spool import Envelope, Spool

log = logging.getLogger(__name__)

IDLE_SLEEP = 0.05  # seconds between polls of an empty incoming directory
BATCH = 8  # messages whose directory entries are flushed together
BATCH_WAIT = 0.05  # seconds the first message of a batch waits at most
SCAN_AHEAD = 3  # messages of one worker at clamd at the same time
# Bayes expiry: not in the first minutes (start-up stays quick, and a worker
# restarted in a loop does not expire on every start), then daily.
EXPIRE_FIRST = 300.0
EXPIRE_EVERY = 86400.0
EXPIRE_RETRY = 3600.0


# region analysers, imported late: each lives in its own part of the tree


def _mime():
    try:
        from core import mime
    except ImportError:
        return None
    return mime


def parse(data: bytes) -> ParsedMessage:
    mime = _mime()
    if mime is not None and hasattr(mime, "parse"):
        return mime.parse(data)
    return _fallback_parse(data)


def add_headers(data: bytes, pairs: list[tuple[str, str]]) -> bytes:
    mime = _mime()
    if mime is not None and hasattr(mime, "add_headers"):
        return mime.add_headers(data, pairs)
    lines = b"".join(f"{name}: {value}\r\n".encode("utf-8") for name, value in pairs)
    return lines + data


def remove_headers(data: bytes, names) -> bytes:
    mime = _mime()
    if mime is not None and hasattr(mime, "remove_headers"):
        return mime.remove_headers(data, list(names))
    return _fallback_remove(data, names)


def _header_block(data: bytes) -> tuple[bytes, bytes]:
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return data, b""
    return data[:end + 2], data[end + 2:]


def _fallback_parse(data: bytes) -> ParsedMessage:
    """Top-level header fields only; used while core.mime is not there."""
    head, _body = _header_block(data)
    fields: list[tuple[str, str]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + " " + line.strip().decode("utf-8", "replace"))
        elif b":" in line:
            name, _, value = line.partition(b":")
            fields.append((name.decode("ascii", "replace").strip(),
                           value.strip().decode("utf-8", "replace")))
    parsed = ParsedMessage(headers=fields, size=len(data))
    parsed.subject = next(iter(parsed.header_values("Subject")), "")
    parsed.message_id = next(iter(parsed.header_values("Message-ID")), "")
    return parsed


def _fallback_remove(data: bytes, names) -> bytes:
    wanted = {name.lower().encode() for name in names}
    head, body = _header_block(data)
    kept, dropping = [], False
    for line in head.split(b"\r\n")[:-1]:
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        dropping = line.partition(b":")[0].strip().lower() in wanted
        if not dropping:
            kept.append(line)
    return b"".join(line + b"\r\n" for line in kept) + body


class _Analysers:
    """The virus scanner and spam filter of one worker, built once."""

    def __init__(self, settings):
        self.settings = settings
        self._virus: Any = None
        self._virus_error: type[Exception] | None = None
        self._spam: Any = None
        self._spam_built = False

    def virus(self, data: bytes, parsed) -> tuple[Any, str]:
        """(result, "") or (None, why the scan could not run)."""
        return self.virus_start(data, parsed)()

    def virus_start(self, data: bytes, parsed) -> Callable[[], tuple[Any, str]]:
        """Hand the message to clamd; the call returned gives :meth:`virus`'s
        answer, so the Bayes check runs while clamd (another process) scans."""
        if not self.settings.virus_scan:
            return lambda: (None, "")
        if self._virus is None:
            try:
                from core.filters.virus import ScannerUnavailable, VirusScanner
            except ImportError:
                return lambda: (None, "virus scanner module not installed")
            self._virus = VirusScanner(self.settings)
            self._virus_error = ScannerUnavailable
        try:
            scan = self._virus.start(data, parsed)
        except Exception as exc:
            failed = self._failure(exc)
            return lambda: failed

        def finish() -> tuple[Any, str]:
            try:
                return scan.result(), ""
            except Exception as exc:
                return self._failure(exc)

        return finish

    def _failure(self, exc: Exception) -> tuple[None, str]:
        if isinstance(exc, self._virus_error):
            return None, f"scanner unavailable: {exc}"
        # A scanner bug must not let mail through.
        log.error("event=virus_error error=%s", scrub(repr(exc)), exc_info=exc)
        return None, f"scanner failed: {type(exc).__name__}"

    def spam(self, parsed) -> Any:
        if not self.settings.bayes_enabled:
            return None
        if not self._spam_built:
            self._spam_built = True
            try:
                from core.spam import SpamFilter
            except ImportError:
                return None
            self._spam = SpamFilter(self.settings)
        if self._spam is None:
            return None
        try:
            return self._spam.check(parsed)
        except Exception as exc:
            # The Bayes score only adds evidence; without it mail still flows,
            # and its Why says the filter failed rather than nothing.
            log.exception("event=spam_error")
            from core.spam import SpamResult

            return SpamResult(0.0, None, "unsure", [],
                              f"the spam filter failed ({type(exc).__name__}); "
                              "see the log line event=spam_error")


# endregion


class QuarantineOrphans:
    """Records quarantined messages whose worker died before recording them
    (``quarantine.adopt_orphans``): at start, then once a minute."""

    def __init__(self, spool: Spool, every: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.spool = spool
        self.every = every
        self.clock = clock
        self.due = clock()

    def tick(self) -> int | None:
        """Adopt when due: files recorded, or None (not due, failed)."""
        now = self.clock()
        if now < self.due:
            return None
        self.due = now + self.every
        try:
            from core import quarantine

            return quarantine.adopt_orphans(self.spool)
        except Exception:
            # A busy database must not stop the filtering of mail.
            log.exception("event=quarantine_adopt_error")
            return None


class BayesExpiry:
    """Drops old rare Bayes tokens once after start-up, then once a day."""

    def __init__(self, settings, first: float = EXPIRE_FIRST,
                 every: float = EXPIRE_EVERY, retry: float = EXPIRE_RETRY,
                 clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.every = every
        self.retry = retry
        self.clock = clock
        self.due = clock() + first

    @property
    def enabled(self) -> bool:
        return bool(self.settings.bayes_enabled
                    and self.settings.bayes_expire_days > 0)

    def tick(self) -> int | None:
        """Expire when due: tokens dropped, or None (not due, off, failed)."""
        now = self.clock()
        if now < self.due or not self.enabled:
            return None
        try:
            from core.spam import expire, store

            # Worker 0 filters mail meanwhile: a locked store is tried again
            # at the next retry, not waited for a minute.
            gone = expire(self.settings, patience=store.QUICK_PATIENCE)
        except Exception:
            # A busy or broken store must not stop the filtering of mail.
            self.due = now + self.retry
            log.exception("event=bayes_expire_error retry_in=%.0f", self.retry)
            return None
        self.due = now + self.every
        return gone


@dataclasses.dataclass
class _Pending:
    """A new copy of one message, and what to do once it is durable."""

    env: Envelope
    data: bytes
    target: Path  # where the new copy goes
    then: Path | None = None  # rename the copy on to here after the commit
    drop: Path | None = None  # the old copy, unlinked after the commit
    after: list[Callable[[], Any]] = dataclasses.field(default_factory=list)


class _Batch:
    """Group commit: one directory flush for several messages.

    Each new copy is written and fsynced under ``tmp``, renamed into place,
    and the target directories are fsynced once for the whole batch; only
    then are the old copies in ``filtering`` unlinked. A crash at any point
    leaves the old copy or a complete new one (or both, and
    ``Spool.recover`` keeps the later state).
    """

    def __init__(self, spool: Spool):
        self.spool = spool
        self.items: list[_Pending] = []
        self.opened = 0.0

    def add(self, item: _Pending) -> None:
        if not self.items:
            self.opened = time.monotonic()
        self.items.append(item)

    def age(self) -> float:
        """Seconds since the first item of the batch was added."""
        return time.monotonic() - self.opened if self.items else 0.0

    def commit(self) -> None:
        """Make the batch durable, then run each item's follow-up calls."""
        if not self.items:
            return
        tmps = [self._write(item) for item in self.items]
        for tmp, item in zip(tmps, self.items):
            os.replace(tmp, item.target)
        if self.spool.fsync:
            for directory in {item.target.parent for item in self.items}:
                self.spool.sync_dir(directory)
        for item in self.items:
            if item.then is not None:
                os.rename(item.target, item.then)
            if item.drop is not None:
                try:
                    os.unlink(item.drop)
                except FileNotFoundError:
                    pass
        for item in self.items:
            for call in item.after:
                call()
        self.items = []

    def _write(self, item: _Pending) -> Path:
        tmp = self.spool.tmp / f"{item.env.qid}.{os.getpid()}.{secrets.token_hex(4)}"
        with open(tmp, "xb") as handle:
            handle.write(item.env.to_json() + b"\n" + item.data)
            if self.spool.fsync:
                handle.flush()
                os.fsync(handle.fileno())
        return tmp


@dataclasses.dataclass
class _InFlight:
    """A parsed message whose virus scan is under way."""

    env: Envelope
    data: bytes
    parsed: ParsedMessage
    scan: Callable[[], tuple[Any, str]]  # clamd's (result, error), when read
    started: float
    parse_ms: float
    scan_started: float


def _qids(window) -> set[str]:
    return {item.env.qid for item in window}


class FilterWorker:
    """Claims messages from ``incoming`` and filters them, a batch at a time."""

    def __init__(self, settings, spool: Spool | None = None):
        self.settings = settings
        self.spool = spool or Spool(settings.data_dir)
        self.analysers = _Analysers(settings)
        self.stopping = False
        # Messages put back for a later try: qid -> time they are due.
        self._held: dict[str, float] = {}
        # Claimed by this worker and not yet committed.
        self._claimed: set[str] = set()
        # qid -> descriptor of the lock that marks the claim as live.
        self._holds: dict[str, int] = {}
        # Calls made between batches (BayesExpiry.tick); they must not raise.
        self.chores: list[Callable[[], Any]] = []

    def run(self) -> None:
        while not self.stopping:
            for chore in self.chores:
                chore()
            try:
                busy = self.run_once()
            except Exception:
                # A failed commit (disk full...): give the claims back, pause.
                log.exception("event=worker_error")
                self._give_back()
                time.sleep(1.0)
                continue
            if not busy:
                time.sleep(IDLE_SLEEP)

    def _give_back(self) -> None:
        for qid in list(self._claimed):
            self.spool.claim(qid, "filtering", "incoming")
        self._claimed.clear()
        self._let_go()

    def _let_go(self) -> None:
        """Drop the locks of messages no longer claimed by this worker."""
        for qid in [q for q in self._holds if q not in self._claimed]:
            self.spool.let_go(self._holds.pop(qid))

    def run_once(self) -> int:
        """Filter what is due in ``incoming`` now; returns how many."""
        done = 0
        now = time.time()
        batch = _Batch(self.spool)
        window: collections.deque[_InFlight] = collections.deque()
        for qid in self.spool.list("incoming"):
            if self.stopping:
                break
            if self._held.get(qid, 0.0) > now:
                continue
            if not self.spool.claim(qid, "incoming", "filtering"):
                continue
            self._claimed.add(qid)
            fd = self.spool.hold("filtering", qid)
            if fd is not None:
                self._holds[qid] = fd
            self._held.pop(qid, None)
            done += 1
            item = self._start(qid, batch)
            if item is not None:
                window.append(item)
            # Later messages go to clamd while this one is judged.
            if len(window) >= SCAN_AHEAD:
                self._finish(window.popleft(), batch)
            if len(batch.items) >= BATCH or batch.age() > BATCH_WAIT:
                batch.commit()
                self._claimed.intersection_update(_qids(window))
                self._let_go()
        while window:
            self._finish(window.popleft(), batch)
        batch.commit()
        self._claimed.clear()
        self._let_go()
        return done

    def process(self, qid: str,
                batch: _Batch | None = None) -> decision_mod.Decision | None:
        """Filter one claimed message (it is in ``filtering``)."""
        own = batch is None
        batch = batch or _Batch(self.spool)
        item = self._start(qid, batch)
        result = self._finish(item, batch) if item is not None else None
        if own:
            batch.commit()
        return result

    def _start(self, qid: str, batch: _Batch) -> "_InFlight | None":
        """Read and parse a claimed message and send it to clamd."""
        started = time.monotonic()
        try:
            env, data = self.spool.read("filtering", qid)
        except Exception:
            log.exception("%s event=unreadable state=filtering", qid)
            return None

        if env.next_attempt > time.time():
            # Not due yet (put back after a failed scan): hand it back.
            self._held[qid] = env.next_attempt
            self.spool.claim(qid, "filtering", "incoming")
            return None

        try:
            parsed = parse(data)
            parse_ms = (time.monotonic() - started) * 1000
            tracking.received(env, parsed.message_id, parsed.subject)
            log.debug("%s event=parsed parts=%d defects=%d malformed=%s", qid,
                      len(parsed.parts), len(parsed.defects), parsed.malformed)
            # clamd works in its own process: the Bayes check runs meanwhile.
            scan = self.analysers.virus_start(data, parsed)
        except Exception:
            log.exception("%s event=filter_error", qid)
            self._retry_later(env, data, "filter error", batch)
            return None
        return _InFlight(env, data, parsed, scan, started, parse_ms,
                         time.monotonic())

    def _finish(self, item: "_InFlight",
                batch: _Batch) -> decision_mod.Decision | None:
        try:
            return self._judge(item, batch)
        except Exception:
            log.exception("%s event=filter_error", item.env.qid)
            self._retry_later(item.env, item.data, "filter error", batch)
            return None

    def _judge(self, item: "_InFlight", batch: _Batch) -> decision_mod.Decision:
        env, data, parsed = item.env, item.data, item.parsed
        qid = env.qid
        t1 = time.monotonic()
        spam = self.analysers.spam(parsed)
        spam_ms = (time.monotonic() - t1) * 1000
        if spam is not None:
            log.debug("%s event=spam score=%.2f probability=%.3f", qid,
                      spam.score, getattr(spam, "probability", 0.0) or 0.0)
            if getattr(spam, "uri_note", ""):
                log.info("%s event=uribl_unchecked note=%s", qid,
                         scrub(spam.uri_note, 400))

        virus, virus_error = item.scan()
        virus_ms = (time.monotonic() - item.scan_started) * 1000
        if virus_error:
            log.warning("%s event=virus result=unscanned reason=%s", qid,
                        scrub(virus_error))
        elif virus is not None and virus.infected:
            log.info("%s event=virus result=infected name=%s", qid,
                     scrub(getattr(virus, "name", "") or "-"))
        elif virus is not None:
            log.debug("%s event=virus result=clean", qid)

        ctx = decision_mod.Context.build(self.settings, env, parsed, virus,
                                         virus_error, spam)
        result = decision_mod.decide(ctx)
        log.debug("%s event=decision action=%s verdict=%s rule=%s", qid,
                  result.action, result.verdict, result.rule)

        filtered_at = time.monotonic()

        def closing() -> None:
            now = time.monotonic()
            log.info("%s event=filtered verdict=%s action=%s rule=%s score=%.1f "
                     "parse_ms=%d virus_ms=%d spam_ms=%d write_ms=%d total_ms=%d",
                     qid, result.verdict, result.action, result.rule, result.score,
                     item.parse_ms, virus_ms, spam_ms, (now - filtered_at) * 1000,
                     (now - item.started) * 1000)

        self._apply(env, data, result, virus, batch, spam)
        batch.items[-1].after.append(closing)
        return result

    def _apply(self, env: Envelope, data: bytes, result, virus,
               batch: _Batch, spam=None) -> None:
        qid = env.qid
        if result.action == "defer":
            self._retry_later(env, data, result.reason, batch)
            return

        env.verdict = result.verdict
        env.score = result.score
        virus_name = getattr(virus, "name", "") if virus is not None else ""
        filtering = self.spool.path("filtering", qid)

        def record() -> None:
            # The admin's "why was this caught": Bayes clues and URI hits.
            tracking.filtered(qid, result.verdict, result.score,
                              virus=virus_name or "", detail=result.reason,
                              bayes_probability=getattr(spam, "probability", None),
                              spam_clues=tracking.clues_of(spam))

        if result.action == "quarantine":
            def quarantined() -> None:
                tracking.quarantined(qid, result.kind, result.reason)
                log.info("%s event=quarantine kind=%s reason=%s", qid, result.kind,
                         scrub(result.reason))

            batch.add(_Pending(env, data, self.spool.quarantine_dir / qid,
                               drop=filtering, after=[record, quarantined]))
            return

        out = remove_headers(data, result.remove_headers)
        out = add_headers(out, list(result.add_headers))
        env.next_attempt = 0.0
        batch.add(_Pending(env, out, self.spool.path("deliver", qid),
                           drop=filtering, after=[record]))

    def _retry_later(self, env: Envelope, data: bytes, reason: str,
                     batch: _Batch) -> None:
        env.next_attempt = time.time() + self.settings.filter_retry
        self._held[env.qid] = env.next_attempt
        filtering = self.spool.path("filtering", env.qid)

        def logged() -> None:
            log.warning("%s event=filter_deferred retry_in=%.0f reason=%s", env.qid,
                        self.settings.filter_retry, scrub(reason))
            # The tracking center and the dashboard's Deferred count show why
            # the message has not moved, instead of a bare "queued".
            tracking.deferred(env.qid, f"not filtered yet: {reason}")

        # Replace the claimed copy in place, then rename it back: a copy
        # written straight into incoming could be claimed by another worker
        # into filtering before the old one is unlinked, which would then
        # unlink that worker's claim.
        batch.add(_Pending(env, data, filtering,
                           then=self.spool.path("incoming", env.qid),
                           after=[logged]))


def serve(settings, index: int = 0) -> None:
    """Run one filter worker process until SIGTERM (finishing its message)."""
    from core import db, dns

    worker = FilterWorker(settings)

    def stop(_signum, _frame) -> None:
        worker.stopping = True

    signal.signal(signal.SIGTERM, stop)
    # Ctrl-C reaches the whole process group; the runner orders the drain.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    db.open_database(settings.database_url)
    # URI blocklist lookups go to dns_servers, as the SMTP-time checks do.
    dns.configure_from(settings)
    if index == 0:
        worker.chores.append(BayesExpiry(settings).tick)
        worker.chores.append(QuarantineOrphans(worker.spool).tick)
    log.info("event=worker_start index=%d pid=%d", index, os.getpid())
    worker.run()
    tracking.flush()
    log.info("event=worker_stop index=%d", index)
