"""The SMTP front end over real sockets: relay control, limits, line ends,
STARTTLS, XCLIENT, PROXY, policy hooks, storing and draining.

Each test starts the service in-process on a free loopback port with its own
data_dir and reads what landed in the spool's incoming/ directory.
"""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from core import config, db, models, replies, tracking
from core.policy.base import HookResult, Policy
from core.smtp.thread import ServiceThread
from core.spool import Spool
from tests.support.casescript import proxy_v1_header
from tests.support.system import free_port

ROOT = Path(__file__).resolve().parent.parent


class Running:
    """A started service plus what tests need to talk to it and inspect it."""

    def __init__(self, tmp_path: Path, policy=None, spool_class=Spool, **overrides):
        self.port = free_port()
        values = {
            "data_dir": str(tmp_path / "data"),
            "hostname": "mx.example.com",
            "smtp_listen_in": f"127.0.0.1:{self.port}",
            "smtp_listen_out": "",
            "relay_domains": "example.com",
            "trusted_networks": "198.51.100.0/24",
            "proxy_protocol_networks": "127.0.0.1/32",
            "greet_pause": 0,
        }
        values.update(overrides)
        self.settings = config.load(environ={}, overrides=values)
        database = db.open_database(self.settings.database_url)
        db.migrate(database)
        self.spool = spool_class(self.settings.data_dir)
        self.thread = ServiceThread(self.settings, self.spool, policy).start()
        self.raws: list[Raw] = []

    def client(self, peer: str = "192.0.2.10", **kwargs) -> smtplib.SMTP:
        return ProxySMTP("127.0.0.1", self.port, peer=peer, timeout=10, **kwargs)

    def raw(self, peer: str | None = "192.0.2.10", source: str = "") -> "Raw":
        client = Raw(self.port, peer, source)
        self.raws.append(client)
        return client

    def stored(self) -> list:
        return [self.spool.read("incoming", q) for q in self.spool.list("incoming")]

    def stop(self) -> None:
        for client in self.raws:
            client.close()
        self.thread.stop(2.0)
        tracking.flush()


class ProxySMTP(smtplib.SMTP):
    """smtplib, but the connection starts with a PROXY v1 header for ``peer``."""

    def __init__(self, host, port, peer, **kwargs):
        self._peer = peer
        super().__init__(host, port, **kwargs)

    def _get_socket(self, host, port, timeout):
        sock = super()._get_socket(host, port, timeout)
        sock.sendall(proxy_v1_header(self._peer, host, port))
        return sock


class Raw:
    """A line-level client for byte-exact tests."""

    def __init__(self, port: int, peer: str | None, source: str = ""):
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=10,
            source_address=(source, 0) if source else None)
        if peer:
            self.sock.sendall(proxy_v1_header(peer, "127.0.0.1", port))
        self.file = self.sock.makefile("rb")

    def read(self) -> str:
        """One reply, all lines joined by newlines; '' when closed."""
        lines = []
        while True:
            line = self.file.readline().decode("utf-8", "replace")
            if not line:
                return "\n".join(lines)
            lines.append(line.rstrip("\r\n"))
            if len(line) < 4 or line[3] != "-":
                return "\n".join(lines)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def cmd(self, line: str) -> str:
        self.send(line.encode() + b"\r\n")
        return self.read()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def smtp(tmp_path):
    started: list[Running] = []

    def start(**overrides) -> Running:
        running = Running(tmp_path / str(len(started)), **overrides)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


def codes(text: str) -> str:
    return text[:3]


MESSAGE = (b"From: <sender@example.net>\r\nTo: <user@example.com>\r\n"
           b"Subject: hello\r\nMessage-ID: <m1@example.net>\r\n\r\nbody\r\n")


# region relay control


def test_relay_refused_for_foreign_domain_from_untrusted_client(smtp):
    server = smtp()
    with server.client("192.0.2.10") as client:
        client.ehlo("client.example.net")
        client.mail("sender@example.net")
        code, text = client.rcpt("victim@example.org")
    assert code == 550
    assert text.decode().startswith("5.7.1")
    assert server.stored() == []


def test_local_domain_accepted_from_anyone_and_stored(smtp):
    server = smtp()
    with server.client("192.0.2.10") as client:
        client.ehlo("client.example.net")
        client.mail("sender@example.net")
        assert client.rcpt("User@Example.COM")[0] == 250
        client.rcpt("User@example.com")  # same mailbox: stored once
        code, text = client.data(MESSAGE)
    assert code == 250
    qid = text.decode().rsplit(" ", 1)[1]
    assert text.decode() == replies.QUEUED.format(qid=qid)[4:]
    [(envelope, data)] = server.stored()
    assert envelope.qid == qid
    assert envelope.recipients == ["User@Example.COM"]
    assert envelope.sender == "sender@example.net"
    assert (envelope.client_ip, envelope.helo, envelope.direction) == (
        "192.0.2.10", "client.example.net", "in")
    assert data.startswith(b"Received: from client.example.net (unknown "
                           b"[192.0.2.10])\r\n\tby mx.example.com (Portcullis) "
                           b"with ESMTP id " + qid.encode())
    assert data.endswith(MESSAGE)
    assert envelope.size == len(data)


def test_trusted_network_may_relay_anywhere(smtp):
    server = smtp()
    with server.client("198.51.100.7") as client:
        client.ehlo("internal.example.com")
        client.mail("user@example.com")
        assert client.rcpt("friend@example.org")[0] == 250
        assert client.data(MESSAGE)[0] == 250
    [(envelope, _)] = server.stored()
    assert envelope.recipients == ["friend@example.org"]


def test_out_listener_marks_direction(smtp):
    out_port = free_port()
    server = smtp(smtp_listen_out=f"127.0.0.1:{out_port}")
    assert server.thread.port("out") == out_port
    with ProxySMTP("127.0.0.1", out_port, peer="198.51.100.9", timeout=10) as client:
        client.sendmail("user@example.com", ["someone@example.org"], MESSAGE)
    [(envelope, _)] = server.stored()
    assert envelope.direction == "out"
    assert envelope.recipients == ["someone@example.org"]


def test_null_sender_and_bare_postmaster(smtp):
    server = smtp()
    raw = server.raw("192.0.2.10")
    assert codes(raw.read()) == "220"
    raw.cmd("EHLO client.example.net")
    assert codes(raw.cmd("MAIL FROM:<>")) == "250"
    assert codes(raw.cmd("RCPT TO:<Postmaster>")) == "250"
    assert codes(raw.cmd("RCPT TO:<nobody>")) == "501"
    assert codes(raw.cmd("DATA")) == "354"
    raw.send(MESSAGE + b".\r\n")
    assert codes(raw.read()) == "250"
    raw.close()
    [(envelope, _)] = server.stored()
    assert envelope.sender == ""
    assert envelope.recipients == ["postmaster@example.com"]


def test_recipient_limit_answers_452(smtp):
    server = smtp(max_recipients=3)
    raw = server.raw()
    raw.read()
    raw.cmd("EHLO client.example.net")
    raw.cmd("MAIL FROM:<sender@example.net>")
    answers = [raw.cmd(f"RCPT TO:<u{n}@example.com>") for n in range(5)]
    assert [codes(a) for a in answers] == ["250", "250", "250", "452", "452"]
    assert answers[3] == replies.TOO_MANY_RCPTS.format()
    raw.cmd("DATA")
    raw.send(MESSAGE + b".\r\n")
    assert codes(raw.read()) == "250"
    [(envelope, _)] = server.stored()
    assert envelope.recipients == ["u0@example.com", "u1@example.com",
                                   "u2@example.com"]


def test_unknown_parameters_get_555_and_bad_syntax_501(smtp):
    server = smtp()
    raw = server.raw()
    raw.read()
    assert codes(raw.cmd("MAIL FROM:<a@example.net>")) == "503"  # no EHLO yet
    raw.cmd("EHLO client.example.net")
    assert raw.cmd("MAIL FROM:<a@example.net> FOO=1").startswith("555 5.5.4")
    assert raw.cmd("MAIL FROM:a@example.net").startswith("501 5.1.7")
    assert codes(raw.cmd("MAIL FROM:<a@example.net> BODY=8BITMIME SMTPUTF8")) == "250"
    assert raw.cmd("RCPT TO:<u@example.com> NOTIFY=NEVER").startswith("555 5.5.4")
    assert raw.cmd("MAIL FROM:<b@example.net>").startswith("503 5.5.1")
    raw.close()


# endregion

# region DATA: line ends, size, line length


def _send_raw_message(server: Running, body: bytes) -> str:
    raw = server.raw()
    raw.read()
    raw.cmd("EHLO client.example.net")
    raw.cmd("MAIL FROM:<sender@example.net>")
    raw.cmd("RCPT TO:<user@example.com>")
    assert codes(raw.cmd("DATA")) == "354"
    raw.send(body)
    answer = raw.read()
    assert codes(raw.cmd("RSET")) == "250"  # still in step after the answer
    raw.close()
    return answer


def test_bare_lf_and_cr_are_normalised_before_storing(smtp):
    server = smtp()
    answer = _send_raw_message(
        server, b"Subject: a\nReply-To: <x@example.org>\r\nX-Ref: 1\r Bcc: y\r\n"
                b"\r\nline\n.\r\nafter\r\n.\r\n")
    assert codes(answer) == "250"
    [(_, data)] = server.stored()
    assert data.count(b"\n") == data.count(b"\r\n") == data.count(b"\r")
    assert data.endswith(b"Subject: a\r\nReply-To: <x@example.org>\r\nX-Ref: 1\r\n"
                         b" Bcc: y\r\n\r\nline\r\n.\r\nafter\r\n")


def test_bare_lf_refused_in_reject_mode(smtp):
    server = smtp(bare_lf="reject")
    answer = _send_raw_message(server, b"Subject: a\n\r\nbody\r\n.\r\n")
    assert answer == replies.BARE_LF.format()
    assert server.stored() == []


def test_lf_dot_crlf_never_ends_data(smtp):
    """Smuggling (CVE-2023-51764 family): only CRLF.CRLF ends DATA."""
    server = smtp()
    answer = _send_raw_message(
        server, b"Subject: a\r\n\r\ntext\r\n\n.\r\nMAIL FROM:<ceo@example.com>\r\n"
                b"RCPT TO:<user@example.com>\r\nDATA\r\nSubject: wire\r\n\r\n.\r\n")
    assert codes(answer) == "250"
    [(envelope, data)] = server.stored()
    assert envelope.sender == "sender@example.net"
    assert b"MAIL FROM:<ceo@example.com>" in data


def test_size_declared_and_actual(smtp):
    server = smtp(max_message_size=2000)
    raw = server.raw()
    raw.read()
    assert "250-SIZE 2000" in raw.cmd("EHLO client.example.net")
    assert raw.cmd("MAIL FROM:<s@example.net> SIZE=2001") == \
        replies.SIZE_TOO_BIG.format(limit=2000)
    assert codes(raw.cmd("MAIL FROM:<s@example.net> SIZE=100")) == "250"
    raw.cmd("RCPT TO:<user@example.com>")
    raw.cmd("DATA")
    raw.send(b"Subject: big\r\n\r\n" + (b"y" * 98 + b"\r\n") * 40 + b".\r\n")
    assert raw.read() == replies.DATA_TOO_BIG.format(limit=2000)
    assert codes(raw.cmd("RSET")) == "250"
    assert codes(raw.cmd("NOOP")) == "250"
    raw.close()
    assert server.stored() == []


def test_long_lines_accepted_when_configured(smtp):
    server = smtp(long_lines="accept")
    line = b"A" * 4000
    answer = _send_raw_message(server, b"Subject: x\r\n\r\n" + line + b"\r\n.\r\n")
    assert codes(answer) == "250"
    [(_, data)] = server.stored()
    assert data.endswith(b"\r\n\r\n" + line + b"\r\n")


def test_command_line_too_long_keeps_session(smtp):
    server = smtp()
    raw = server.raw()
    raw.read()
    assert raw.cmd("NOOP " + "x" * 3000) == replies.LINE_TOO_LONG.format()
    assert codes(raw.cmd("EHLO client.example.net")) == "250"
    raw.close()


def test_smtputf8_addresses(smtp):
    server = smtp()
    raw = server.raw()
    raw.read()
    assert "SMTPUTF8" in raw.cmd("EHLO client.example.net")
    assert raw.cmd("MAIL FROM:<jörg@example.net>").startswith("553 5.6.7")
    assert codes(raw.cmd("MAIL FROM:<jörg@example.net> SMTPUTF8")) == "250"
    assert codes(raw.cmd("RCPT TO:<δοκιμή@example.com>")) == "250"
    raw.cmd("DATA")
    raw.send("Subject: ünïcode\r\n\r\nbody\r\n.\r\n".encode())
    assert codes(raw.read()) == "250"
    [(envelope, data)] = server.stored()
    assert envelope.sender == "jörg@example.net"
    assert envelope.recipients == ["δοκιμή@example.com"]
    assert envelope.mail_options == ["SMTPUTF8"]
    received = data.split(b"\r\nSubject:")[0]
    assert received.isascii() and b"with UTF8SMTP id" in received


def _wait_no_sessions(server: Running) -> bool:
    deadline = time.monotonic() + 5
    while server.thread.service.sessions and time.monotonic() < deadline:
        time.sleep(0.02)
    return not server.thread.service.sessions


def test_client_hangup_mid_transaction_frees_the_session(smtp):
    server = smtp()
    raw = server.raw()
    raw.read()
    raw.cmd("EHLO client.example.net")
    raw.cmd("MAIL FROM:<sender@example.net>")
    raw.cmd("RCPT TO:<user@example.com>")
    raw.cmd("DATA")
    raw.send(b"Subject: half\r\n\r\npart")
    raw.close()
    assert _wait_no_sessions(server)
    assert server.stored() == []


def test_idle_client_times_out(smtp):
    server = smtp(smtp_timeout=0.5)
    raw = server.raw()
    raw.read()
    assert raw.read().startswith("421 4.4.2")
    assert raw.read() == ""
    assert _wait_no_sessions(server)


# endregion

# region TLS, XCLIENT, PROXY


def test_starttls_with_generated_certificate(smtp):
    server = smtp()
    cert = Path(server.settings.data_dir) / "tls" / "smtp.crt"
    assert cert.exists()
    key = cert.with_name("smtp.key")
    assert key.stat().st_mode & 0o077 == 0
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    with server.client() as client:
        client.ehlo("client.example.net")
        assert client.has_extn("starttls")
        client.starttls(context=context)
        client.ehlo("client.example.net")
        assert not client.has_extn("starttls")
        client.sendmail("sender@example.net", ["user@example.com"], MESSAGE)
    [(envelope, data)] = server.stored()
    assert envelope.tls
    assert b"with ESMTPS id" in data and b"(using TLSv1." in data


def test_drain_leaves_a_closing_tls_session_alone(smtp):
    """Regression: a drain that ran while a TLS session was still closing
    wrote its 421 into asyncio's closed TLS transport and crashed
    (AttributeError in sslproto) instead of waiting for the close to end."""
    server = smtp()
    cert = Path(server.settings.data_dir) / "tls" / "smtp.crt"
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    with server.client() as client:
        client.ehlo("client.example.net")
        client.starttls(context=context)
        client.ehlo("client.example.net")

        async def close_then_drain_twice() -> int:
            [session] = server.thread.service.sessions
            session.transport.close()  # as after QUIT: the TLS close under way
            session.shutdown_if_idle()
            session.shutdown_if_idle()
            session.abort()
            return len(server.thread.service.sessions)

        assert server.thread.call(close_then_drain_twice()) <= 1
        with pytest.raises((smtplib.SMTPServerDisconnected, OSError)):
            client.noop()


def test_xclient_presents_the_real_client(smtp):
    server = smtp(xclient_networks="127.0.0.1/32", proxy_protocol_networks="",
                  trusted_networks="")
    raw = server.raw(peer=None)
    raw.read()
    assert "XCLIENT" in raw.cmd("EHLO front.example.com")
    answer = raw.cmd("XCLIENT ADDR=192.0.2.55 NAME=mx.example.net PORT=2525")
    assert answer.startswith("220 ")
    assert codes(raw.cmd("MAIL FROM:<s@example.net>")) == "503"  # EHLO again
    raw.cmd("EHLO mx.example.net")
    raw.cmd("MAIL FROM:<s@example.net>")
    assert codes(raw.cmd("RCPT TO:<friend@example.org>")) == "550"  # untrusted
    raw.cmd("RCPT TO:<user@example.com>")
    raw.cmd("DATA")
    raw.send(MESSAGE + b".\r\n")
    assert codes(raw.read()) == "250"
    raw.close()
    [(envelope, data)] = server.stored()
    assert envelope.client_ip == "192.0.2.55"
    assert envelope.client_name == "mx.example.net"
    assert b"(mx.example.net [192.0.2.55])" in data


def test_casescript_can_present_the_peer_with_xclient(smtp, tmp_path):
    from tests.support import casescript

    server = smtp(xclient_networks="127.0.0.1/32", proxy_protocol_networks="",
                  trusted_networks="")
    session = tmp_path / "session.txt"
    session.write_text("@connect peer=2001:db8::7\nS: 220\n"
                       "C: EHLO client.example.net\\r\\n\nS: 250\n"
                       "C: MAIL FROM:<s@example.net>\\r\\n\nS: 250\n"
                       "C: RCPT TO:<x@example.org>\\r\\n\nS: 550\n"
                       "C: QUIT\\r\\n\nS: 221\n")
    casescript.run(session, "127.0.0.1", server.port, peer_mode="xclient").check()


def test_xclient_refused_from_other_hosts(smtp):
    server = smtp(proxy_protocol_networks="")
    raw = server.raw(peer=None)
    raw.read()
    raw.cmd("EHLO front.example.com")
    assert raw.cmd("XCLIENT ADDR=192.0.2.55") == replies.XCLIENT_DENIED.format()
    raw.close()


def _proxy_v2(src: str, dst: str, sport: int, dport: int) -> bytes:
    addresses = socket.inet_aton(src) + socket.inet_aton(dst) \
        + struct.pack("!HH", sport, dport)
    return (b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11])
            + struct.pack("!H", len(addresses)) + addresses)


def test_proxy_v2_header_and_only_listed_hosts_need_one(smtp):
    server = smtp(proxy_protocol_networks="127.0.0.2/32")
    # 127.0.0.1 is not a listed front host: a plain connection works.
    plain = server.raw(peer=None)
    assert codes(plain.read()) == "220"
    plain.close()
    # 127.0.0.2 must send a header; v2 presents the client.
    raw = server.raw(peer=None, source="127.0.0.2")
    raw.send(_proxy_v2("203.0.113.5", "127.0.0.1", 40000, server.port))
    assert codes(raw.read()) == "220"
    raw.cmd("EHLO client.example.net")
    raw.cmd("MAIL FROM:<s@example.net>")
    raw.cmd("RCPT TO:<user@example.com>")
    raw.cmd("DATA")
    raw.send(MESSAGE + b".\r\n")
    assert codes(raw.read()) == "250"
    raw.close()
    [(envelope, _)] = server.stored()
    assert envelope.client_ip == "203.0.113.5"
    # Without the header a listed host is dropped, no banner.
    bare = server.raw(peer=None, source="127.0.0.2")
    bare.send(b"EHLO client.example.net\r\n")
    assert bare.read() == ""
    bare.close()


# endregion

# region policy hooks, storing, tracking


class RecordingPolicy(Policy):
    def __init__(self):
        self.calls: list[str] = []

    async def on_connect(self, session):
        self.calls.append("connect")
        if session.peer_ip == "203.0.113.66":
            return HookResult(reply="554 5.7.1 Go away")
        return HookResult(score=0.5)

    async def on_helo(self, session, name):
        self.calls.append("helo")
        return None

    async def on_mail(self, session, sender):
        self.calls.append(f"mail {sender} {session.qid}")
        return None

    async def on_rcpt(self, session, rcpt):
        self.calls.append(f"rcpt {rcpt}")
        if rcpt.startswith("blocked@"):
            return HookResult(reply="550 5.7.1 Blocked by policy")
        return None

    async def on_data(self, session, data):
        self.calls.append("data")
        result = HookResult(headers=[("X-Policy", "checked\r\nBcc: injected")],
                            score=1.5)
        result.notes = ["spf=pass"]
        return result

    async def on_disconnect(self, session):
        self.calls.append("disconnect")


def test_policy_hooks_replies_headers_and_score(smtp):
    policy = RecordingPolicy()
    server = smtp(policy=policy)
    refused = server.raw("203.0.113.66")
    assert refused.read() == "554 5.7.1 Go away"
    assert refused.read() == ""  # closed after the connect refusal
    refused.close()
    with server.client("192.0.2.10") as client:
        client.ehlo("client.example.net")
        client.mail("sender@example.net")
        assert client.rcpt("blocked@example.com") == (550,
                                                      b"5.7.1 Blocked by policy")
        assert client.rcpt("user@example.com")[0] == 250
        assert client.data(MESSAGE)[0] == 250
    [(envelope, data)] = server.stored()
    assert data.startswith(b"X-Policy: checked  Bcc: injected\r\nReceived: from ")
    assert envelope.smtp_score == 2.0
    assert "spf=pass" in envelope.smtp_notes
    assert policy.calls.count("connect") == 2
    assert f"mail sender@example.net {envelope.qid}" in policy.calls
    deadline = time.monotonic() + 5
    while "disconnect" not in policy.calls and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "disconnect" in policy.calls


class BrokenSpool(Spool):
    def _write_tmp(self, envelope, data):
        raise OSError(28, "No space left on device")


def test_storage_error_answers_451_never_250(smtp):
    server = smtp(spool_class=BrokenSpool)
    with server.client() as client:
        client.ehlo("client.example.net")
        client.mail("sender@example.net")
        client.rcpt("user@example.com")
        code, text = client.data(MESSAGE)
    assert (code, text.decode()) == (451, replies.STORE_FAILED.format()[4:])


def test_tracking_row_written_after_250(smtp):
    server = smtp()
    with server.client() as client:
        client.sendmail("sender@example.net", ["user@example.com"], MESSAGE)
    [(envelope, _)] = server.stored()
    tracking.flush()
    row = models.Message.get(models.Message.qid == envelope.qid)
    assert (row.message_id, row.subject) == ("<m1@example.net>", "hello")


def test_garbage_logged_once_and_too_much_closes(smtp, caplog):
    server = smtp()
    raw = server.raw()
    raw.read()
    with caplog.at_level("INFO", logger="core.smtp.handler"):
        answers = [raw.cmd("\x01\x02garbage") for _ in range(9)]
        assert all(codes(a) == "500" for a in answers)
        assert raw.cmd("\x01") == replies.TOO_MANY_ERRORS.format(
            host="mx.example.com")
    assert raw.read() == ""
    raw.close()
    assert len([r for r in caplog.records if "event=bad_command" in r.message]) == 1


# endregion

# region drain and the serve() entry


def test_drain_lets_open_transaction_finish(smtp):
    server = smtp()
    idle = server.raw()
    idle.read()
    busy = server.raw()
    busy.read()
    busy.cmd("EHLO client.example.net")
    busy.cmd("MAIL FROM:<sender@example.net>")
    busy.cmd("RCPT TO:<user@example.com>")
    drained = threading.Thread(target=server.thread.stop, args=(10.0,))
    drained.start()
    assert codes(idle.read()) == "421"  # idle sessions are closed at once
    time.sleep(0.2)
    assert codes(busy.cmd("DATA")) == "354"
    busy.send(MESSAGE + b".\r\n")
    assert codes(busy.read()) == "250"
    assert codes(busy.read()) == "421"  # then the session is closed
    drained.join(15)
    assert not drained.is_alive()
    assert len(server.stored()) == 1
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).recv(1)
    idle.close()
    busy.close()


def test_serve_runs_until_sigterm(tmp_path):
    port = free_port()
    env = dict(os.environ, PORTCULLIS_DATA_DIR=str(tmp_path),
               PORTCULLIS_SMTP_LISTEN_IN=f"127.0.0.1:{port}",
               PORTCULLIS_SMTP_LISTEN_OUT="", PORTCULLIS_HOSTNAME="mx.example.com",
               PORTCULLIS_CONFIG=str(tmp_path / "none.conf"))
    (tmp_path / "none.conf").write_text("")
    code = ("from core import config, db\n"
            "from core.smtp.server import serve\n"
            "s = config.load()\n"
            "db.migrate(db.open_database(s.database_url))\n"
            "serve(s)\n")
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                               stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                client = smtplib.SMTP("127.0.0.1", port, timeout=10)
                break
            except OSError:
                assert process.poll() is None, process.stderr.read()
                assert time.monotonic() < deadline
                time.sleep(0.1)
        with client:
            client.sendmail("sender@example.net", ["user@example.com"], MESSAGE)
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()
    assert len(Spool(tmp_path).list("incoming")) == 1


# endregion
