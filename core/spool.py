"""The durable queue on disk.

Every message is one file: a line of JSON (the envelope), a newline, then
the message bytes exactly as accepted (CRLF line ends, dot-stuffing removed).
A message moves between state directories by ``rename``, which is atomic on
one file system, so each message is in exactly one state at any moment::

    tmp/ --write+fsync--> incoming/ --claim--> filtering/ --> deliver/
                                                   |              |  ^
                                                   v         claim|  |deferred
                                            <data>/quarantine/   sending/

A state change that rewrites the file (new headers, new recipient states)
writes the new copy under ``tmp/``, fsyncs it, renames it into the target
state and only then unlinks the old copy. If the process dies in between,
:meth:`Spool.recover` finds the message in two states and keeps the later.

Each new file is fsynced on its own; the fsync of the directory after the
rename is shared: :meth:`Spool.store_batch` stores many messages with one,
and threads storing at the same time wait for one directory flush that
started after their rename (:class:`GroupSync`). Either way a store
returns only once both its file and its name are durable.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Iterator

STATES = ("incoming", "filtering", "deliver", "sending")

# Order used by recover(): a copy in a later state supersedes an earlier one.
_RANK = {state: rank for rank, state in enumerate(STATES)}

_QID_ALPHABET = set("0123456789ABCDEF")


def new_qid() -> str:
    """A queue id: millisecond time (sortable) plus 24 random bits, in hex."""
    return f"{int(time.time() * 1000):011X}{secrets.randbits(24):06X}"


def valid_qid(qid: str) -> bool:
    return 12 <= len(qid) <= 32 and set(qid) <= _QID_ALPHABET


@dataclasses.dataclass
class RecipientState:
    status: str = "queued"  # queued | delivered | deferred | bounced
    attempts: int = 0
    reply: str = ""


@dataclasses.dataclass
class Envelope:
    qid: str
    sender: str  # "" is the null sender <>
    recipients: list[str]
    client_ip: str = ""
    client_name: str = ""
    helo: str = ""
    direction: str = "in"  # in | out
    received_at: float = dataclasses.field(default_factory=time.time)
    size: int = 0
    mail_options: list[str] = dataclasses.field(default_factory=list)
    tls: bool = False
    # Left by SMTP-time checks (core/policy) for the content filter.
    smtp_score: float = 0.0
    smtp_notes: list[str] = dataclasses.field(default_factory=list)
    # Filled in by the filter.
    verdict: str = ""
    score: float | None = None
    # Filled in by delivery.
    rcpt_state: dict[str, RecipientState] = dataclasses.field(default_factory=dict)
    attempts: int = 0
    next_attempt: float = 0.0
    is_bounce: bool = False

    def to_json(self) -> bytes:
        # By hand: dataclasses.asdict deep-copies every field and cost more
        # than the JSON encoding itself, once per state change of a message.
        data = {name: getattr(self, name) for name in _ENVELOPE_FIELDS}
        data["rcpt_state"] = {address: {"status": state.status,
                                        "attempts": state.attempts,
                                        "reply": state.reply}
                              for address, state in self.rcpt_state.items()}
        return json.dumps(data, ensure_ascii=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "Envelope":
        data = json.loads(raw)
        states = data.pop("rcpt_state", {}) or {}
        env = cls(**{k: v for k, v in data.items() if k in _KNOWN})
        env.rcpt_state = {a: RecipientState(**s) for a, s in states.items()}
        return env


_ENVELOPE_FIELDS = tuple(f.name for f in dataclasses.fields(Envelope))
_KNOWN = frozenset(_ENVELOPE_FIELDS)


class SpoolError(Exception):
    pass


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class GroupSync:
    """Directory fsyncs shared by the threads that renamed into one directory.

    A thread that has renamed its file in calls :meth:`sync`; it returns
    once an fsync of the directory has *started* after that call. While
    one fsync runs, later callers wait and are all covered by the next
    one, so stores from several threads flush the directory once for many
    messages instead of once each.
    """

    def __init__(self, path: Path):
        self.path = path
        self._cond = threading.Condition()
        self._asked = 0  # tickets handed out
        self._done = 0  # every ticket up to this one is durable
        self._running = False

    def sync(self) -> None:
        with self._cond:
            self._asked += 1
            ticket = self._asked
            while self._done < ticket:
                if self._running:
                    self._cond.wait()
                    continue
                # Every ticket handed out so far belongs to a rename that
                # has already happened: this fsync covers them all.
                covered = self._asked
                self._running = True
                self._cond.release()
                try:
                    fsync_dir(self.path)
                finally:
                    self._cond.acquire()
                    self._running = False
                    self._cond.notify_all()
                self._done = max(self._done, covered)


class Spool:
    """The queue directories under ``<data_dir>/queue`` and the quarantine."""

    def __init__(self, data_dir: Path | str, fsync: bool = True):
        self.root = Path(data_dir) / "queue"
        self.quarantine_dir = Path(data_dir) / "quarantine"
        self.fsync = fsync
        self.tmp = self.root / "tmp"
        for directory in (self.tmp, self.quarantine_dir):
            directory.mkdir(parents=True, exist_ok=True)
        for state in STATES:
            (self.root / state).mkdir(parents=True, exist_ok=True)
        # Plain strings for the per-message calls: pathlib's joins cost more
        # than the rename they build a name for.
        self._dirs = {state: str(self.root / state) for state in STATES}
        self._syncs = {path: GroupSync(path) for path in
                       [self.quarantine_dir, *(self.root / s for s in STATES)]}

    def path(self, state: str, qid: str) -> Path:
        return self.root / state / qid

    def _file(self, state: str, qid: str) -> str:
        return f"{self._dirs[state]}/{qid}"

    # region writing

    def _write_tmp(self, envelope: Envelope, data: bytes) -> Path:
        tmp = self.tmp / f"{envelope.qid}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            view = memoryview(envelope.to_json() + b"\n" + data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        return tmp

    def _install(self, tmp: Path, target: Path) -> None:
        os.replace(tmp, target)
        if self.fsync:
            self.sync_dir(target.parent)

    def sync_dir(self, path: Path) -> None:
        """Make the renames and unlinks done so far in ``path`` durable."""
        group = self._syncs.get(path)
        if group is None:
            fsync_dir(path)
        else:
            group.sync()

    def store_new(self, envelope: Envelope, data: bytes) -> Path:
        """Put an accepted message into ``incoming``; durable when it returns.

        Only after this returns may the SMTP side answer 250.
        """
        target = self.path("incoming", envelope.qid)
        self._install(self._write_tmp(envelope, data), target)
        return target

    def store_batch(self, items: list[tuple[Envelope, bytes]]
                    ) -> list[Exception | None]:
        """:meth:`store_new` for several messages, with one directory fsync.

        Returns, per message, None when it is durable or the error that
        kept it from being so (its sender must not get a 250).
        """
        results: list[Exception | None] = []
        installed: list[int] = []
        for envelope, data in items:
            try:
                tmp = self._write_tmp(envelope, data)
                os.replace(tmp, self.path("incoming", envelope.qid))
            except Exception as exc:
                results.append(exc)
                continue
            installed.append(len(results))
            results.append(None)
        if installed and self.fsync:
            try:
                self.sync_dir(self.root / "incoming")
            except OSError as exc:
                # Their names may not be durable: no 250 for any of them
                # (the sender retries; a copy that survived is sent twice).
                for index in installed:
                    results[index] = exc
        return results

    def rewrite(self, envelope: Envelope, data: bytes, state: str,
                old_state: str | None = None) -> Path:
        """Write a new copy into ``state``, then drop the one in ``old_state``."""
        target = self.path(state, envelope.qid)
        self._install(self._write_tmp(envelope, data), target)
        if old_state and old_state != state:
            self.remove(old_state, envelope.qid)
        return target

    def store_quarantine(self, envelope: Envelope, data: bytes) -> Path:
        """Keep a copy in the quarantine directory (durable when it returns)."""
        target = self.quarantine_dir / envelope.qid
        self._install(self._write_tmp(envelope, data), target)
        return target

    # endregion

    # region reading and moving

    @staticmethod
    def read_file(path: Path | str) -> tuple[Envelope, bytes]:
        with open(path, "rb") as handle:
            raw = handle.read()
        head, sep, data = raw.partition(b"\n")
        if not sep:
            raise SpoolError(f"{path} has no envelope line")
        return Envelope.from_json(head), data

    def read(self, state: str, qid: str) -> tuple[Envelope, bytes]:
        return self.read_file(self._file(state, qid))

    def read_quarantine(self, qid: str) -> tuple[Envelope, bytes]:
        return self.read_file(self.quarantine_dir / qid)

    def list(self, state: str) -> list[str]:
        """Queue ids in ``state``, oldest first (ids sort by time)."""
        names = os.listdir(self._dirs[state])
        return sorted(n for n in names if valid_qid(n))

    def claim(self, qid: str, src: str, dst: str) -> bool:
        """Move ``qid`` from ``src`` to ``dst``; False if another took it."""
        try:
            os.rename(self._file(src, qid), self._file(dst, qid))
        except FileNotFoundError:
            return False
        return True

    def hold(self, state: str, qid: str) -> int | None:
        """Lock a claimed file until :meth:`let_go` or this process's end.

        The supervisor's sweep leaves a held file alone and hands back one
        nobody holds: the kernel drops the lock when its holder dies, so a
        dead worker's claims are found at once, not after ``ORPHAN_AGE``.
        Returns the descriptor, or None when the file is gone.
        """
        try:
            fd = os.open(self._file(state, qid), os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        return fd

    @staticmethod
    def let_go(fd: int) -> None:
        os.close(fd)

    def unheld(self, state: str, qid: str) -> bool:
        """Whether the file is there and no process holds it."""
        fd = self.hold(state, qid)
        if fd is None:
            return False
        self.let_go(fd)  # ends this test's own lock
        return True

    def claim_next(self, src: str, dst: str, limit: int = 64) -> Iterator[str]:
        """Claim up to ``limit`` messages, oldest first."""
        taken = 0
        for qid in self.list(src):
            if taken >= limit:
                return
            if self.claim(qid, src, dst):
                taken += 1
                yield qid

    def remove(self, state: str, qid: str) -> None:
        try:
            os.unlink(self._file(state, qid))
        except FileNotFoundError:
            return
        if self.fsync:
            self.sync_dir(self.root / state)

    def remove_quarantine(self, qid: str) -> None:
        try:
            os.unlink(self.quarantine_dir / qid)
        except FileNotFoundError:
            pass

    # endregion

    def recover(self) -> dict[str, int]:
        """Put claimed messages back after a crash; call before workers start.

        Returns how many messages were found in each state.
        """
        seen: dict[str, str] = {}
        for state in STATES:
            for qid in self.list(state):
                earlier = seen.get(qid)
                if earlier is not None and _RANK[earlier] < _RANK[state]:
                    # Died between installing the new copy and unlinking the old.
                    os.unlink(self.path(earlier, qid))
                seen[qid] = state
        quarantined = set(os.listdir(self.quarantine_dir))
        for qid, state in list(seen.items()):
            if state == "filtering" and qid in quarantined:
                os.unlink(self.path("filtering", qid))
                del seen[qid]
        for qid, state in seen.items():
            if state == "filtering":
                self.claim(qid, "filtering", "incoming")
                seen[qid] = "incoming"
            elif state == "sending":
                self.claim(qid, "sending", "deliver")
                seen[qid] = "deliver"
        for name in os.listdir(self.tmp):
            os.unlink(self.tmp / name)  # never acknowledged, never counted
        counts = {state: 0 for state in STATES}
        for state in seen.values():
            counts[state] += 1
        return counts
