"""The SMTP server with the real policy, in-process, for SMTP-time filter tests.

:class:`PolicyGateway` opens a fresh SQLite database in a temporary folder,
runs the migrations, builds ``core.policy.build(settings, clock=...)`` and
starts ``core.smtp.server.start_servers`` on a free loopback port in a
thread with its own event loop. The listener expects a PROXY header from
127.0.0.1, so :class:`Client` can present any client address (IPv4 or IPv6).
Policy settings and lists are written to the database like the admin does,
then re-read at once with ``gateway.set(...)`` / ``gateway.add(...)``.
The clock of the policy is ``gateway.clock``; ``advance()`` fast-forwards it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from pathlib import Path

import pytest

from core import config, db, tracking
from core.policy import build, store
from core.policy.check import Clock
from core.smtp.tls import default_paths
from core.spool import Spool
from tests.support.system import free_port


_TLS: list[str] = []  # cert and key made by the first gateway of the run


class Client:
    """A line-level SMTP client that starts with a PROXY v1 header."""

    def __init__(self, port: int, peer: str, timeout: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb")
        family = "TCP6" if ipaddress.ip_address(peer).version == 6 else "TCP4"
        dest = "::1" if family == "TCP6" else "127.0.0.1"
        self.sock.sendall(f"PROXY {family} {peer} {dest} 40000 25\r\n".encode())
        self.greeting = self.read()

    def read(self) -> tuple[int, str]:
        """One reply: (code, text of all lines); (0, "") when closed."""
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                return 0, "\n".join(lines)
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(text[4:])
            if len(text) < 4 or text[3] != "-":
                return int(text[:3]), "\n".join(lines)

    def cmd(self, line: str) -> tuple[int, str]:
        self.sock.sendall(line.encode("utf-8") + b"\r\n")
        return self.read()

    def send_message(self, body: bytes) -> tuple[int, str]:
        code, text = self.cmd("DATA")
        if code != 354:
            return code, text
        lines = body.replace(b"\r\n", b"\n").split(b"\n")
        stuffed = b"\r\n".join(b"." + ln if ln.startswith(b".") else ln
                               for ln in lines)
        self.sock.sendall(stuffed.rstrip(b"\r\n") + b"\r\n.\r\n")
        return self.read()

    def transaction(self, sender: str, rcpt: str, helo: str = "mail.example.org",
                    body: bytes | None = None) -> list[int]:
        """EHLO (once), MAIL, RCPT and, when RCPT got 250, DATA; the codes."""
        codes = []
        if not getattr(self, "_greeted", False):
            codes.append(self.cmd(f"EHLO {helo}")[0])
            self._greeted = True
        codes.append(self.cmd(f"MAIL FROM:<{sender}>")[0])
        if codes[-1] != 250:
            return codes
        code, self.last_rcpt = self.cmd(f"RCPT TO:<{rcpt}>")
        codes.append(code)
        if code != 250:
            self.cmd("RSET")
            return codes
        body = body or (f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: test\r\n"
                        f"\r\nbody\r\n").encode()
        codes.append(self.send_message(body)[0])
        return codes

    def close(self) -> None:
        try:
            self.cmd("QUIT")
        except OSError:
            pass
        self.file.close()
        self.sock.close()


class PolicyGateway:
    """SMTP server + policy + database, on a free port, in this process."""

    def __init__(self, directory: Path, **overrides):
        self.directory = Path(directory)
        self.port = free_port()
        values = {
            "data_dir": str(self.directory / "data"),
            "hostname": "mx.example.com",
            "smtp_listen_in": f"127.0.0.1:{self.port}",
            "smtp_listen_out": "",
            "relay_domains": "example.com",
            "proxy_protocol_networks": "127.0.0.1/32",
            "greet_pause": 0,
            "downstream": "",
        }
        if _TLS:
            values["tls_cert"], values["tls_key"] = _TLS
        values.update(overrides)
        self.settings = config.load(environ={}, overrides=values)
        self.database = db.open_database(self.settings.database_url)
        db.migrate(self.database)
        self.clock = Clock()
        self.policy = build(self.settings, clock=self.clock)
        self.spool = Spool(self.settings.data_dir, fsync=False)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever,
                                       name="policy-gateway", daemon=True)
        self.thread.start()
        from core.smtp.server import start_servers

        self.service = self.run(start_servers(self.settings, self.spool, self.policy))
        if not _TLS and not self.settings.tls_cert:
            # Key generation is the slow part of a start: reuse the first one.
            _TLS.extend(str(p) for p in default_paths(self.settings.data_dir))

    def run(self, coro, timeout: float = 30.0):
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def set(self, **values) -> None:
        """Store policy settings (``spf_enabled=True`` -> ``spf.enabled``)."""
        for name, value in values.items():
            store.set_setting(name.replace("_", ".", 1), value)
        self.policy.reload()

    def add(self, list_name: str, kind: str, pattern: str) -> None:
        store.add_list_entry(list_name, kind, pattern)
        self.policy.reload()

    def client(self, peer: str) -> Client:
        return Client(self.port, peer)

    def queued(self) -> list:
        """(envelope, message bytes) of everything accepted so far."""
        return [self.spool.read("incoming", qid)
                for qid in sorted(self.spool.list("incoming"))]

    def close(self) -> None:
        try:
            self.run(self.service.drain(timeout=2.0))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()
            tracking.flush()
            store.counters.flush()
            self.database.close()


@pytest.fixture
def gateway(tmp_path, dns_zone):
    """A fresh PolicyGateway per test (import this name into a test module)."""
    gw = PolicyGateway(tmp_path)
    yield gw
    gw.close()
