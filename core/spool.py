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
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
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
        data = dataclasses.asdict(self)
        return json.dumps(data, ensure_ascii=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "Envelope":
        data = json.loads(raw)
        states = data.pop("rcpt_state", {}) or {}
        known = {f.name for f in dataclasses.fields(cls)}
        env = cls(**{k: v for k, v in data.items() if k in known})
        env.rcpt_state = {a: RecipientState(**s) for a, s in states.items()}
        return env


class SpoolError(Exception):
    pass


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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

    def path(self, state: str, qid: str) -> Path:
        return self.root / state / qid

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
            fsync_dir(target.parent)

    def store_new(self, envelope: Envelope, data: bytes) -> Path:
        """Put an accepted message into ``incoming``; durable when it returns.

        Only after this returns may the SMTP side answer 250.
        """
        target = self.path("incoming", envelope.qid)
        self._install(self._write_tmp(envelope, data), target)
        return target

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
    def read_file(path: Path) -> tuple[Envelope, bytes]:
        raw = path.read_bytes()
        head, sep, data = raw.partition(b"\n")
        if not sep:
            raise SpoolError(f"{path} has no envelope line")
        return Envelope.from_json(head), data

    def read(self, state: str, qid: str) -> tuple[Envelope, bytes]:
        return self.read_file(self.path(state, qid))

    def read_quarantine(self, qid: str) -> tuple[Envelope, bytes]:
        return self.read_file(self.quarantine_dir / qid)

    def list(self, state: str) -> list[str]:
        """Queue ids in ``state``, oldest first (ids sort by time)."""
        names = os.listdir(self.root / state)
        return sorted(n for n in names if valid_qid(n))

    def claim(self, qid: str, src: str, dst: str) -> bool:
        """Move ``qid`` from ``src`` to ``dst``; False if another took it."""
        try:
            os.rename(self.path(src, qid), self.path(dst, qid))
        except FileNotFoundError:
            return False
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
            os.unlink(self.path(state, qid))
        except FileNotFoundError:
            return
        if self.fsync:
            fsync_dir(self.root / state)

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
