"""Runs a case's ``session.txt`` (format: ../shared/cases/README.md)
against a live SMTP server and checks every reply.

The client address of ``@connect peer=IP`` is presented with a PROXY v1
header (the server must list the runner's address in
``proxy_protocol_networks``), so ``nowait`` really talks before the banner.
``peer_mode="xclient"`` uses XCLIENT instead (then ``nowait`` cannot talk
before the banner, the XCLIENT exchange comes first), ``"none"`` connects
plainly.

Usage::

    script = casescript.parse(CASES / "001-smuggling-lf-dot-crlf")
    result = casescript.run(script, "127.0.0.1", port)
    result.check()          # AssertionError with the transcript on failure
    result.replies          # [(line, code, text)], every reply read

``@wait N`` calls ``on_wait(N)`` (default: sleep N seconds), so a harness
can move the gateway's clock instead. ``@config`` and ``@dns`` lines are only
collected (``script.config``, ``script.dns``); the caller sets the server
up accordingly before ``run``.
"""

from __future__ import annotations

import dataclasses
import re
import select
import socket
import ssl
import time
from pathlib import Path
from typing import Callable

_ESCAPE = re.compile(rb"\\(x[0-9A-Fa-f]{2}|r|n|t|\\)")
_REPLY_LINE = re.compile(rb"(\d{3})([ -])(.*)")


@dataclasses.dataclass
class Step:
    kind: str  # connect | send | expect | data | tls | wait | forbid | latency
    line: int
    peer: str = ""
    nowait: bool = False
    data: bytes = b""
    alternatives: tuple[str, ...] = ()
    number: float = 0.0
    path: Path | None = None


@dataclasses.dataclass
class Script:
    path: Path
    steps: list[Step]
    config: list[str] = dataclasses.field(default_factory=list)
    dns: list[Path] = dataclasses.field(default_factory=list)

    @property
    def folder(self) -> Path:
        return self.path.parent


@dataclasses.dataclass
class Result:
    script: Script
    replies: list[tuple[int, str, str]] = dataclasses.field(default_factory=list)
    failures: list[str] = dataclasses.field(default_factory=list)
    transcript: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def codes(self) -> list[str]:
        return [code for _, code, _ in self.replies]

    def report(self) -> str:
        tail = "\n".join(self.transcript[-40:])
        return (f"{self.script.path}: " + "; ".join(self.failures)
                + f"\n--- last transcript lines ---\n{tail}")

    def check(self) -> "Result":
        if self.failures:
            raise AssertionError(self.report())
        return self


def decode_escapes(text: str) -> bytes:
    """``\\r \\n \\t \\\\ \\xHH`` escapes; everything else literal (UTF-8)."""
    raw = text.encode("utf-8")

    def sub(match: re.Match) -> bytes:
        token = match.group(1)
        if token[:1] == b"x":
            return bytes([int(token[1:], 16)])
        return {b"r": b"\r", b"n": b"\n", b"t": b"\t", b"\\": b"\\"}[token]

    return _ESCAPE.sub(sub, raw)


def dot_stuff(data: bytes) -> bytes:
    """RFC 5321 s4.5.2 transparency, plus the final ``.`` line."""
    if data.startswith(b"."):
        data = b"." + data
    data = data.replace(b"\r\n.", b"\r\n..")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def parse(path: Path | str) -> Script:
    """Read ``session.txt`` (or the case folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "session.txt"
    script = Script(path=path, steps=[])
    previous_send: Step | None = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.rstrip("\r")
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("C:"):
            data = decode_escapes(line[3:] if line.startswith("C: ") else line[2:])
            if previous_send is not None:
                previous_send.data += data
            else:
                previous_send = Step("send", number, data=data)
                script.steps.append(previous_send)
            continue
        previous_send = None
        if line.startswith("S:"):
            alternatives = tuple(a.strip() for a in line[2:].split("|") if a.strip())
            script.steps.append(Step("expect", number, alternatives=alternatives))
            continue
        words = line.split()
        directive, args = words[0], words[1:]
        if directive == "@connect":
            peer = next((a[5:] for a in args if a.startswith("peer=")), "")
            script.steps.append(Step("connect", number, peer=peer,
                                     nowait="nowait" in args))
        elif directive == "@data":
            script.steps.append(Step("data", number, path=script.folder / args[0]))
        elif directive == "@tls":
            script.steps.append(Step("tls", number))
        elif directive == "@wait":
            script.steps.append(Step("wait", number, number=float(args[0])))
        elif directive == "@forbid-reply":
            script.steps.append(Step("forbid", number, alternatives=tuple(args)))
        elif directive == "@max-latency":
            script.steps.append(Step("latency", number, number=float(args[0])))
        elif directive == "@config":
            script.config.append(" ".join(args))
        elif directive == "@dns":
            script.dns.append(script.folder / args[0])
        else:
            raise ValueError(f"{path}:{number}: unknown directive {directive!r}")
    return script


def _matches(code: str, pattern: str) -> bool:
    return len(pattern) == 3 and all(p in ("x", "X") or p == c
                                     for p, c in zip(pattern, code))


class _Connection:
    def __init__(self, sock: socket.socket):
        self.sock: socket.socket | ssl.SSLSocket = sock
        self.buffer = b""
        self.closed = False

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            self.closed = True
            return False

    def _fill(self, timeout: float) -> bool:
        """Read more bytes; False on timeout or close."""
        if self.closed:
            return False
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            return False
        except OSError:
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self.buffer += chunk
        return True

    def read_reply(self, timeout: float) -> tuple[str, str] | str:
        """(code, text) of one (multi-line) reply, or "CLOSE" / "TIMEOUT"."""
        deadline = time.monotonic() + timeout
        lines: list[bytes] = []
        while True:
            while b"\n" in self.buffer:
                raw, _, self.buffer = self.buffer.partition(b"\n")
                raw = raw.rstrip(b"\r")
                match = _REPLY_LINE.match(raw)
                if match is None:
                    return ("???", raw.decode("utf-8", "replace"))
                lines.append(raw)
                if match.group(2) == b" ":
                    text = "\n".join(x.decode("utf-8", "replace") for x in lines)
                    return (match.group(1).decode(), text)
            left = deadline - time.monotonic()
            if left <= 0:
                return "TIMEOUT"
            if not self._fill(left):
                if self.closed:
                    return "CLOSE"
                return "TIMEOUT"

    def pending(self) -> bool:
        if self.buffer:
            return True
        if self.closed:
            return False
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True
        readable, _, _ = select.select([self.sock], [], [], 0)
        if not readable:
            return False
        # Readable may also mean closed; only data counts as a pending reply.
        self._fill(0.05)
        return bool(self.buffer)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
        self.closed = True


def proxy_v1_header(peer: str, server_ip: str, server_port: int,
                    peer_port: int = 40000) -> bytes:
    if ":" in peer:
        return f"PROXY TCP6 {peer} ::1 {peer_port} {server_port}\r\n".encode()
    return f"PROXY TCP4 {peer} {server_ip} {peer_port} {server_port}\r\n".encode()


def run(script: Script | Path | str, host: str, port: int, *,
        peer_mode: str = "proxy", on_wait: Callable[[float], None] | None = None,
        timeout: float = 10.0, silence: float = 2.0) -> Result:
    """Play the script; never raises for a mismatch (see Result.check)."""
    if not isinstance(script, Script):
        script = parse(script)
    result = Result(script)
    conn: _Connection | None = None
    skipping = False
    forbidden: tuple[str, ...] = ()
    max_latency: float | None = None
    last_sent = time.monotonic()

    def fail(step: Step, text: str) -> None:
        result.failures.append(f"line {step.line}: {text}")

    def got(step: Step, reply) -> None:
        code, text = reply
        result.replies.append((step.line, code, text))
        result.transcript.append(f"S: {text}")
        if code in forbidden or any(_matches(code, f) for f in forbidden):
            fail(step, f"forbidden reply {text!r}")
        if max_latency is not None and time.monotonic() - last_sent > max_latency:
            fail(step, f"reply {code} after {time.monotonic() - last_sent:.2f}s, "
                       f"over the {max_latency}s allowed")

    try:
        for step in script.steps:
            if step.kind == "connect":
                if conn is not None:
                    conn.close()
                skipping = False
                conn = _Connection(socket.create_connection((host, port), timeout))
                last_sent = time.monotonic()
                result.transcript.append(f"@connect peer={step.peer}")
                if peer_mode == "proxy" and step.peer:
                    conn.send(proxy_v1_header(step.peer, host, port))
                elif peer_mode == "xclient" and step.peer:
                    _xclient(conn, step.peer, timeout)
                continue
            if step.kind == "forbid":
                forbidden = forbidden + step.alternatives
                continue
            if step.kind == "latency":
                max_latency = step.number
                continue
            if step.kind == "wait":
                (on_wait or time.sleep)(step.number)
                continue
            if skipping or conn is None:
                continue
            if step.kind in ("send", "data"):
                if step.kind == "data":
                    payload = dot_stuff(step.path.read_bytes())
                    shown = f"[{step.path.name}, {len(payload)} octets dot-stuffed]"
                else:
                    payload = step.data
                    shown = repr(payload[:200])
                if conn.pending():
                    extra = conn.read_reply(0.5)
                    fail(step, f"unexpected reply pending before sending: {extra!r}")
                result.transcript.append(f"C: {shown}")
                conn.send(payload)
                last_sent = time.monotonic()
            elif step.kind == "tls":
                if conn.buffer:
                    fail(step, f"plaintext left before TLS: {conn.buffer[:80]!r}")
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                try:
                    conn.sock = context.wrap_socket(conn.sock, server_hostname=host)
                    result.transcript.append("@tls done")
                except (OSError, ssl.SSLError) as error:
                    fail(step, f"TLS handshake failed: {error}")
                    conn.closed = True
            elif step.kind == "expect":
                if step.alternatives == ("*",):
                    _drain(conn, silence, got, step)
                    continue
                reply = conn.read_reply(timeout)
                if reply == "CLOSE":
                    result.transcript.append("S: <closed>")
                    if "CLOSE" in step.alternatives:
                        skipping = True
                    else:
                        fail(step, f"connection closed, expected "
                                   f"{'|'.join(step.alternatives)}")
                        skipping = True
                    continue
                if reply == "TIMEOUT":
                    fail(step, f"no reply within {timeout}s, expected "
                               f"{'|'.join(step.alternatives)}")
                    skipping = True
                    continue
                got(step, reply)
                if not any(_matches(reply[0], alt) for alt in step.alternatives):
                    fail(step, f"got {reply[1]!r}, expected "
                               f"{'|'.join(step.alternatives)}")
    finally:
        if conn is not None:
            conn.close()
    return result


def _drain(conn: _Connection, silence: float, got, step: Step) -> None:
    while True:
        reply = conn.read_reply(silence)
        if reply in ("CLOSE", "TIMEOUT"):
            return
        got(step, reply)


def _xclient(conn: _Connection, peer: str, timeout: float) -> None:
    addr = f"IPV6:{peer}" if ":" in peer else peer
    for command in (None, b"EHLO casescript.invalid\r\n",
                    f"XCLIENT ADDR={addr} NAME=[UNAVAILABLE]\r\n".encode()):
        if command is not None:
            conn.send(command)
        reply = conn.read_reply(timeout)
        if not isinstance(reply, tuple) or not reply[0].startswith("2"):
            raise AssertionError(f"XCLIENT setup failed: {reply!r}")
        if command is not None and command.startswith(b"XCLIENT"):
            # The fresh 220 is the greeting the script expects: put it back.
            conn.buffer = (reply[1].replace("\n", "\r\n") + "\r\n").encode() \
                + conn.buffer
