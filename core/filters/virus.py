"""Virus scanning with clamd: the raw message, plus the leaves that matter.

clamd parses MIME itself, so the raw message always goes first. Our parser
decodes as leniently as the clients do, and clamd's own decoder can read a
part differently (base64 with inner padding, junk lines, parts inside
message/rfc822, NUL bytes, ambiguous structure: clamav#918, #1332, gmime#150),
so those leaves, and every non-text leaf, are sent as well, each decoded
payload once.

All streams of one message go over one connection in one clamd session
(``IDSESSION``, several ``INSTREAM`` commands pipelined, then ``END``): one
connect per message whatever the number of leaves. pyclamd opens a new
socket for every command, has no session and writes each 4 KiB chunk with
two system calls, so the protocol (clamd(8), "COMMANDS") is spoken here.

Limits: clamd does not tell its StreamMaxLength, so ``clamd_stream_max``
must match it; a stream over it is not sent and is named in
``VirusResult.unscanned`` (the decision must not call that clean); its
leaves are then all sent, one by one. At most ``MAX_STREAMS`` leaves are
sent besides a raw message that fits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import socket
import struct
import time

from core.logsetup import scrub
from core.message import ParsedMessage

log = logging.getLogger(__name__)

MAX_STREAMS = 32
CHUNK = 256 * 1024
_TEXT_TYPES = ("text/plain", "text/html")


class ScannerUnavailable(Exception):
    """clamd could not be reached or answered an error; try again later."""


@dataclasses.dataclass
class VirusResult:
    infected: bool
    name: str = ""  # signature name, e.g. "Eicar-Test-Signature.UNOFFICIAL"
    scanned_bytes: int = 0
    where: str = ""  # "message" or the part path the signature was found in
    unscanned: str = ""  # what could not be sent (over StreamMaxLength)
    streams: int = 0


def parse_address(text: str) -> tuple[int, object]:
    """``unix:/path`` (or a bare path) and ``host:port`` -> (family, address)."""
    text = text.strip()
    if text.startswith("unix:"):
        return socket.AF_UNIX, text[5:]
    if text.startswith("/"):
        return socket.AF_UNIX, text
    if text.startswith("["):
        host, _, port = text[1:].partition("]")
        return socket.AF_INET6, (host, int(port.lstrip(":")))
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"clamd address {text!r}: use unix:/path or host:port")
    return socket.AF_INET, (host, int(port))


class _Session:
    """One connection to clamd, closed on exit."""

    def __init__(self, family: int, address: object, timeout: float):
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(address)
        except OSError:
            self.sock.close()
            raise
        self.buffer = b""
        self.pending: list[bytes | memoryview] = []
        self.pending_size = 0

    def __enter__(self) -> "_Session":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.sock.close()

    def send(self, data: bytes | memoryview) -> None:
        """Queue bytes; small commands go out together in one write."""
        self.pending.append(data)
        self.pending_size += len(data)
        if self.pending_size >= CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.sock.sendall(b"".join(self.pending))
            self.pending.clear()
            self.pending_size = 0

    def stream(self, data: bytes) -> None:
        self.send(b"zINSTREAM\0")
        view = memoryview(data)
        for offset in range(0, len(data), CHUNK):
            piece = view[offset:offset + CHUNK]
            self.send(struct.pack("!L", len(piece)))
            self.send(piece)
        self.send(b"\0\0\0\0")

    def replies(self, wanted: int) -> list[bytes]:
        self.flush()
        out: list[bytes] = []
        while len(out) < wanted:
            end = self.buffer.find(b"\0")
            if end >= 0:
                out.append(self.buffer[:end])
                self.buffer = self.buffer[end + 1:]
                continue
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buffer += chunk
        return out


class VirusScanner:
    """Scans a message with clamd (``event=virus``)."""

    def __init__(self, settings):
        self.setting = settings.clamd
        self.family, self.address = parse_address(settings.clamd)
        self.timeout = float(settings.clamd_timeout)
        self.stream_max = int(getattr(settings, "clamd_stream_max",
                                      25 * 1024 * 1024))

    def _connect(self) -> _Session:
        try:
            return _Session(self.family, self.address, self.timeout)
        except OSError as exc:
            raise ScannerUnavailable(
                f"clamd at {self.setting} cannot be reached: {exc}") from None

    def ping(self) -> bool:
        """True when clamd answers PONG; ScannerUnavailable otherwise."""
        try:
            with self._connect() as session:
                session.send(b"zPING\0")
                answer = session.replies(1)
        except OSError as exc:
            raise ScannerUnavailable(f"clamd at {self.setting}: {exc}") from None
        if answer != [b"PONG"]:
            raise ScannerUnavailable(f"clamd at {self.setting} answered "
                                     f"{scrub(answer)} to PING")
        return True

    def version(self) -> str:
        """clamd's version line, e.g. ``ClamAV 1.4.6/...``."""
        try:
            with self._connect() as session:
                session.send(b"zVERSION\0")
                answer = session.replies(1)
        except OSError as exc:
            raise ScannerUnavailable(f"clamd at {self.setting}: {exc}") from None
        if not answer:
            raise ScannerUnavailable(f"clamd at {self.setting} closed on VERSION")
        return answer[0].decode("utf-8", "replace")

    def scan(self, data: bytes, parsed: ParsedMessage | None = None,
             qid: str = "-") -> VirusResult:
        """The verdict for the raw message and the leaves worth a second look."""
        return self.start(data, parsed, qid).result()

    def start(self, data: bytes, parsed: ParsedMessage | None = None,
              qid: str = "-") -> "Scan":
        """Send the streams to clamd now; :meth:`Scan.result` reads the verdict.

        The caller can do other work while clamd scans, without a thread.
        """
        streams, skipped = self._streams(data, parsed)
        if not streams:
            # Nothing fits: still prove clamd is there, so "unscanned" is
            # the only thing the verdict lacks.
            self.ping()
            return Scan(self, None, [], skipped, qid)
        session = self._connect()
        try:
            session.send(b"zIDSESSION\0")
            for _, payload in streams:
                session.stream(payload)
            session.send(b"zEND\0")
            session.flush()
        except OSError as exc:
            session.sock.close()
            raise self._unavailable(qid, exc) from None
        return Scan(self, session, streams, skipped, qid)

    def _unavailable(self, qid: str, exc: OSError) -> ScannerUnavailable:
        log.warning("%s event=virus-error clamd=%s error=%s", qid,
                    scrub(self.setting), scrub(exc))
        return ScannerUnavailable(f"clamd at {self.setting}: {exc}")

    def _verdict(self, answers: list[bytes], streams: list[tuple[str, bytes]],
                 skipped: list[str], started: float, qid: str) -> VirusResult:
        if len(answers) < len(streams):
            raise ScannerUnavailable(
                f"clamd at {self.setting} answered {len(answers)} of "
                f"{len(streams)} streams")

        result = VirusResult(infected=False, streams=len(streams),
                             scanned_bytes=sum(len(p) for _, p in streams),
                             unscanned="; ".join(skipped))
        # Answers come in the order clamd finished; report the first stream
        # (the whole message before its parts) when several found something.
        for number, where, verdict in sorted(self._answer(a, streams)
                                             for a in answers):
            if verdict.endswith(" ERROR"):
                raise ScannerUnavailable(
                    f"clamd at {self.setting} failed on stream {number}: "
                    f"{scrub(verdict)}")
            if verdict.endswith(" FOUND") and not result.infected:
                result.infected = True
                result.name = verdict[:-6].strip()
                result.where = where
        log.debug("%s event=virus-scan streams=%d bytes=%d seconds=%.3f", qid,
                  result.streams, result.scanned_bytes, time.monotonic() - started)
        if result.infected:
            log.debug("%s event=virus-found name=%s part=%s", qid,
                      scrub(result.name), result.where)
        return result

    @staticmethod
    def _answer(answer: bytes,
                streams: list[tuple[str, bytes]]) -> tuple[int, str, str]:
        """``1: stream: Eicar FOUND`` -> (1, where, "Eicar FOUND")."""
        text = answer.decode("utf-8", "replace")
        number_text, _, rest = text.partition(": ")
        try:
            number = int(number_text)
        except ValueError:
            raise ScannerUnavailable(f"clamd answered {scrub(text)}") from None
        if rest.startswith("stream: "):
            rest = rest[8:]
        where = streams[number - 1][0] if 0 < number <= len(streams) else "?"
        return number, where, rest.strip()

    def _streams(self, data: bytes, parsed: ParsedMessage | None
                 ) -> tuple[list[tuple[str, bytes]], list[str]]:
        skipped: list[str] = []
        streams: list[tuple[str, bytes]] = []
        raw_sent = len(data) <= self.stream_max
        if raw_sent:
            streams.append(("message", data))
        else:
            skipped.append(f"message of {len(data)} bytes over clamd "
                           f"StreamMaxLength {self.stream_max}")
        seen = {hashlib.sha1(data).digest()}
        # Without the raw message the leaves are all clamd sees: send each
        # (the parser bounds their number and size).
        leaves = [p for p in (parsed.parts if parsed else []) if p.payload
                  and (not raw_sent or _worth_scanning(p, parsed))]
        most = MAX_STREAMS if raw_sent else len(leaves)
        for part in leaves:
            digest = hashlib.sha1(part.payload).digest()
            if digest in seen:
                continue
            seen.add(digest)
            if len(part.payload) > self.stream_max:
                skipped.append(f"part {part.path} of {len(part.payload)} bytes "
                               f"over StreamMaxLength")
                continue
            if len(streams) > most:
                skipped.append(f"{len(leaves)} leaves, only {MAX_STREAMS} sent "
                               "apart (the raw message covers the rest)")
                break
            streams.append((part.path or "body", part.payload))
        return streams, skipped


class Scan:
    """Streams sent to clamd in one session, their answers not read yet."""

    def __init__(self, scanner: VirusScanner, session: "_Session | None",
                 streams: list[tuple[str, bytes]], skipped: list[str], qid: str):
        self.scanner = scanner
        self.session = session
        self.streams = streams
        self.skipped = skipped
        self.qid = qid
        self.started = time.monotonic()
        self.done: VirusResult | None = None
        if session is None:
            self.done = VirusResult(infected=False, unscanned="; ".join(skipped))

    def result(self) -> VirusResult:
        """Wait for clamd's answers; ScannerUnavailable if they do not come."""
        if self.done is not None:
            return self.done
        if self.session is None:
            raise ScannerUnavailable(f"clamd at {self.scanner.setting}: the "
                                     "session was closed before its answers")
        try:
            with self.session:
                answers = self.session.replies(len(self.streams))
        except OSError as exc:
            raise self.scanner._unavailable(self.qid, exc) from None
        finally:
            self.session = None
        self.done = self.scanner._verdict(answers, self.streams, self.skipped,
                                          self.started, self.qid)
        return self.done


def _worth_scanning(part, parsed: ParsedMessage) -> bool:
    """Whether clamd might read this leaf differently in the raw message."""
    if parsed.malformed or part.defects or part.in_rfc822:
        return True
    if part.content_type not in _TEXT_TYPES:
        return True
    if part.detected_type and part.detected_type not in _TEXT_TYPES:
        return True
    return any(d.startswith("nul-bytes") for d in parsed.defects)
