"""A recording SMTP server in its own process, the fake downstream of tests.

``python -m tests.support.sink --dir D --port P`` serves SMTP on
127.0.0.1:P and writes every transaction to ``D``: ``NNNNNN.json`` (the
MAIL and RCPT lines as received, sender, recipients, replies),
``NNNNNN.wire`` (the DATA bytes as they came over the wire, still
dot-stuffed, without the final dot line) and ``NNNNNN.eml`` (after
un-stuffing). The JSON file is written last, so a record that is there is
complete. With ``--mode index`` only one line per transaction is appended
to ``index.log`` (the value of ``X-Bench-Id`` or ``Message-ID``), which is
what a benchmark needs.

Behaviour is steered by ``D/rules.json``, re-read when it changes
(:meth:`Sink.set_rules`): a reply per recipient at RCPT, and a reply for
the first N transactions at RCPT or at the final dot.

Only the standard library is used, so a benchmark can start it too. End
of data is strict: only CRLF.CRLF ends it (RFC 5321 4.1.1.4).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

EHLO_LINES = ("PIPELINING", "8BITMIME", "SMTPUTF8", "SIZE 104857600",
              "ENHANCEDSTATUSCODES")


# region the server (runs in the child process)


class _Rules:
    def __init__(self, directory: Path):
        self.path = directory / "rules.json"
        self.mtime = 0.0
        self.rules: dict = {}
        self.transactions = 0

    def current(self) -> dict:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return self.rules
        if mtime != self.mtime:
            self.mtime = mtime
            try:
                self.rules = json.loads(self.path.read_text())
            except (OSError, ValueError):
                return self.rules
            self.transactions = 0  # "first N" counts from the new rules
        return self.rules


class _Server:
    def __init__(self, directory: Path, mode: str):
        self.directory = directory
        self.mode = mode
        self.rules = _Rules(directory)
        self.count = len(list(directory.glob("*.json"))) - (
            1 if (directory / "rules.json").exists() else 0)
        self.index = open(directory / "index.log", "ab", buffering=0)
        self.sessions = 0

    async def session(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        try:
            await self._session(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    async def _session(self, reader, writer) -> None:
        def reply(line: str) -> None:
            writer.write(line.encode() + b"\r\n")

        self.sessions += 1
        session = self.sessions
        reply("220 sink.test ESMTP recording sink")
        tx: dict | None = None
        while True:
            await writer.drain()
            raw = await reader.readline()
            if not raw:
                return
            line = raw.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
            verb = line[:4].upper()
            if verb == "EHLO":
                lines = ["sink.test", *EHLO_LINES]
                for item in lines[:-1]:
                    reply(f"250-{item}")
                reply(f"250 {lines[-1]}")
            elif verb == "HELO":
                reply("250 sink.test")
            elif verb == "MAIL":
                rules = self.rules.current()
                self.rules.transactions += 1
                tx = {"mail_line": line, "rcpt_lines": [], "recipients": [],
                      "accepted": [], "replies": [], "sender": _path(line),
                      "attempt": self.rules.transactions, "session": session,
                      "peer": writer.get_extra_info("peername")[0]}
                reply("250 2.1.0 ok")
            elif verb == "RCPT":
                if tx is None:
                    reply("503 5.5.1 MAIL first")
                    continue
                rcpt = _path(line)
                tx["rcpt_lines"].append(line)
                tx["recipients"].append(rcpt)
                answer = self._rcpt_reply(tx, rcpt)
                tx["replies"].append(answer)
                if answer.startswith("2"):
                    tx["accepted"].append(rcpt)
                reply(answer)
            elif verb == "DATA":
                if tx is None or not tx["accepted"]:
                    reply("554 5.5.1 no valid recipients")
                    continue
                reply("354 go ahead")
                await writer.drain()
                wire = await self._read_data(reader)
                answer = self._data_reply(tx)
                tx["data_reply"] = answer
                self._record(tx, wire, answer)
                reply(answer)
                tx = None
            elif verb == "RSET":
                tx = None
                reply("250 2.0.0 ok")
            elif verb == "NOOP":
                reply("250 2.0.0 ok")
            elif verb == "QUIT":
                reply("221 2.0.0 bye")
                await writer.drain()
                return
            else:
                reply("500 5.5.2 unknown command")

    def _rcpt_reply(self, tx: dict, rcpt: str) -> str:
        rules = self.rules.current()
        by_rcpt = rules.get("rcpt", {})
        if rcpt.lower() in by_rcpt:
            return by_rcpt[rcpt.lower()]
        if rules.get("stage", "rcpt") == "rcpt" and \
                tx["attempt"] <= rules.get("fail_first", 0):
            return rules.get("fail_reply", "451 4.3.0 try again later")
        return "250 2.1.5 ok"

    def _data_reply(self, tx: dict) -> str:
        rules = self.rules.current()
        if rules.get("stage") == "data" and tx["attempt"] <= rules.get("fail_first", 0):
            return rules.get("fail_reply", "451 4.3.0 try again later")
        self.count += 1
        return f"250 2.0.0 ok: queued as sink-{self.count}"

    @staticmethod
    async def _read_data(reader: asyncio.StreamReader) -> bytes:
        chunks = []
        after_crlf = True  # the DATA command line ended with CRLF
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionError("closed in DATA")
            if after_crlf and line == b".\r\n":
                return b"".join(chunks)
            chunks.append(line)
            after_crlf = line.endswith(b"\r\n")

    def _record(self, tx: dict, wire: bytes, answer: str) -> None:
        if not answer.startswith("2"):
            return
        data = b"\r\n".join(line[1:] if line.startswith(b".") else line
                            for line in wire.split(b"\r\n"))
        if self.mode == "index":
            self.index.write(_bench_id(data) + b" %d\n" % len(tx["accepted"]))
            return
        name = f"{self.count:06d}"
        (self.directory / f"{name}.wire").write_bytes(wire)
        (self.directory / f"{name}.eml").write_bytes(data)
        tx["time"] = time.time()
        tmp = self.directory / f".{name}.tmp"
        tmp.write_text(json.dumps(tx))
        os.replace(tmp, self.directory / f"{name}.json")
        self.index.write(_bench_id(data) + b" %d\n" % len(tx["accepted"]))


def _path(line: str) -> str:
    """The address between the first < and its >, as received."""
    start = line.find("<")
    end = line.rfind(">")
    if start < 0 or end < start:
        return line.partition(":")[2].strip()
    return line[start + 1:end]


def _bench_id(data: bytes) -> bytes:
    head = data.split(b"\r\n\r\n", 1)[0]
    message_id = b"-"
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"x-bench-id":
            return value.strip() or b"-"
        if name == b"message-id" and message_id == b"-":
            message_id = value.strip().replace(b" ", b"_") or b"-"
    return message_id


async def _serve(directory: Path, port: int, mode: str) -> None:
    server = _Server(directory, mode)
    listener = await asyncio.start_server(server.session, "127.0.0.1", port,
                                          limit=64 * 1024 * 1024, backlog=512)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    (directory / "ready").write_text(str(os.getpid()))
    async with listener:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="recording SMTP sink")
    parser.add_argument("--dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=("full", "index"), default="full")
    args = parser.parse_args(argv)
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    asyncio.run(_serve(directory, args.port, args.mode))


# endregion

# region the handle tests use


@dataclasses.dataclass
class Transaction:
    """One recorded transaction."""

    number: int
    sender: str
    recipients: list[str]
    accepted: list[str]
    mail_line: str
    rcpt_lines: list[str]
    replies: list[str]
    wire: bytes  # DATA as on the wire (dot-stuffed), without the final dot
    data: bytes  # after un-stuffing
    session: int = 0  # which connection (1, 2, ...) since the sink started
    attempt: int = 0  # which transaction since the rules were last set

    def header(self, name: str) -> list[str]:
        head = self.data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
        found = []
        for line in head.split("\r\n"):
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() == name.lower():
                found.append(value.strip())
        return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Sink:
    """A sink process; ``transactions()`` reads what it has recorded."""

    def __init__(self, directory: Path | str, port: int | None = None,
                 mode: str = "full"):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or _free_port()
        self.mode = mode
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> "Sink":
        ready = self.directory / "ready"
        ready.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.sink", "--dir",
             str(self.directory), "--port", str(self.port), "--mode", self.mode],
            cwd=REPO)
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sink on port {self.port} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def set_rules(self, rcpt: dict[str, str] | None = None, fail_first: int = 0,
                  fail_reply: str = "451 4.3.0 try again later",
                  stage: str = "rcpt") -> None:
        """Replies to give: per recipient, and for the first N transactions."""
        rules = {"rcpt": {k.lower(): v for k, v in (rcpt or {}).items()},
                 "fail_first": fail_first, "fail_reply": fail_reply,
                 "stage": stage, "written": time.time_ns()}
        tmp = self.directory / ".rules.tmp"
        tmp.write_text(json.dumps(rules))
        os.replace(tmp, self.directory / "rules.json")

    def transactions(self) -> list[Transaction]:
        found = []
        for path in sorted(self.directory.glob("[0-9]*.json")):
            record = json.loads(path.read_text())
            stem = path.with_suffix("")
            found.append(Transaction(
                number=int(path.stem), sender=record["sender"],
                recipients=record["recipients"], accepted=record["accepted"],
                mail_line=record["mail_line"], rcpt_lines=record["rcpt_lines"],
                replies=record["replies"],
                wire=stem.with_suffix(".wire").read_bytes(),
                data=stem.with_suffix(".eml").read_bytes(),
                session=record.get("session", 0),
                attempt=record.get("attempt", 0)))
        return found

    def wait_for(self, predicate=None, count: int = 1,
                 timeout: float = 20.0) -> list[Transaction]:
        """Transactions matching ``predicate``, once there are ``count``."""
        deadline = time.monotonic() + timeout
        while True:
            found = [t for t in self.transactions()
                     if predicate is None or predicate(t)]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def clear(self) -> None:
        for pattern in ("[0-9]*.json", "[0-9]*.wire", "[0-9]*.eml"):
            for path in self.directory.glob(pattern):
                path.unlink()


def _fixture():
    import pytest

    @pytest.fixture
    def sink(tmp_path):
        """A recording SMTP sink on a free loopback port, in its own process."""
        server = Sink(tmp_path / "sink").start()
        yield server
        server.stop()

    return sink


if "pytest" in sys.modules:
    sink = _fixture()

# endregion


if __name__ == "__main__":
    main()
