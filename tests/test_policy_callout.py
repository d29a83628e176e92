"""Receiver verification against a real downstream SMTP server (aiosmtpd on
loopback) that knows some users: unknown users refused, answers cached with
their own lifetimes, a silent or absent downstream never giving a 5xx, and
no DATA ever sent by a probe."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from aiosmtpd.controller import Controller

from tests.support.policyharness import PolicyGateway
from tests.support.system import free_port


class Directory:
    """aiosmtpd handler: known users get 250 at RCPT, others 550 5.1.1."""

    def __init__(self, users):
        self.users = {u.lower() for u in users}
        self.commands: list[str] = []

    async def handle_MAIL(self, server, session, envelope, address, options):
        self.commands.append(f"MAIL {address}")  # aiosmtpd keeps <> as "<>"
        envelope.mail_from = address
        return "250 2.1.0 ok"

    async def handle_RCPT(self, server, session, envelope, address, options):
        self.commands.append(f"RCPT <{address}>")
        if address.lower() in self.users:
            envelope.rcpt_tos.append(address)
            return "250 2.1.5 ok"
        if address.lower().startswith("busy"):
            return "451 4.3.0 try later"
        return "550 5.1.1 no such user"

    async def handle_DATA(self, server, session, envelope):
        self.commands.append("DATA")
        return "250 2.0.0 ok"

    async def handle_RSET(self, server, session, envelope):
        self.commands.append("RSET")
        return "250 2.0.0 ok"

    def probes(self) -> int:
        return sum(1 for c in self.commands if c.startswith("RCPT"))


@pytest.fixture
def downstream():
    handler = Directory(["user@example.com", "boss@example.com"])
    port = free_port()
    # server_hostname: without it aiosmtpd asks socket.getfqdn(), a resolver call.
    controller = Controller(handler, hostname="127.0.0.1", port=port,
                            server_hostname="downstream.test")
    controller.start()
    handler.port = port
    yield handler
    controller.stop()


@pytest.fixture
def verifying(tmp_path, dns_zone, downstream):
    gw = PolicyGateway(tmp_path, downstream=f"127.0.0.1:{downstream.port}",
                       relay_domains="example.com,example.net")
    gw.set(callout_enabled=True)
    yield gw
    gw.close()


def rcpt(gw, address, peer="192.0.2.10"):
    client = gw.client(peer)
    try:
        client.cmd("EHLO mail.example.org")
        client.cmd("MAIL FROM:<a@example.org>")
        return client.cmd(f"RCPT TO:<{address}>")
    finally:
        client.close()


def test_known_user_accepted_unknown_refused(verifying, downstream):
    assert rcpt(verifying, "user@example.com")[0] == 250
    code, text = rcpt(verifying, "nobody@example.com")
    assert code == 550 and text.startswith("5.1.1 ") and "nobody@example.com" in text
    assert "DATA" not in downstream.commands
    assert "MAIL <>" in downstream.commands  # the probe uses the null sender


def test_unknown_user_code_450(verifying):
    verifying.set(callout_unknown_code=450)
    code, text = rcpt(verifying, "nobody@example.com")
    assert code == 450 and text.startswith("4.1.1 ")


def test_answers_cached_with_separate_lifetimes(verifying, downstream):
    verifying.set(callout_positive_ttl=3600, callout_negative_ttl=60)
    for _ in range(3):
        assert rcpt(verifying, "user@example.com")[0] == 250
        assert rcpt(verifying, "nobody@example.com")[0] == 550
    assert downstream.probes() == 2
    verifying.clock.advance(120)  # negative answer expired, positive not
    assert rcpt(verifying, "nobody@example.com")[0] == 550
    assert rcpt(verifying, "user@example.com")[0] == 250
    assert downstream.probes() == 3
    verifying.clock.advance(3600)
    assert rcpt(verifying, "user@example.com")[0] == 250
    assert downstream.probes() == 4


def test_temporary_downstream_answer_is_not_a_refusal(verifying):
    assert rcpt(verifying, "busy@example.com")[0] == 250
    verifying.set(callout_on_error="defer")
    verifying.clock.advance(60)
    code, text = rcpt(verifying, "busy2@example.com")
    assert code == 450 and text.startswith("4.4.3 ")


def test_only_relay_domains_are_verified(verifying, downstream):
    # Trusted clients relay anywhere; their outside recipients are not probed.
    assert rcpt(verifying, "someone@elsewhere.example", peer="127.0.0.1")[0] == 250
    assert downstream.probes() == 0


@pytest.mark.parametrize("on_error,expected", [("accept", 250), ("defer", 450)])
def test_absent_downstream_never_gives_5xx(tmp_path, dns_zone, on_error, expected):
    gw = PolicyGateway(tmp_path, downstream=f"127.0.0.1:{free_port()}")
    try:
        gw.set(callout_enabled=True, callout_on_error=on_error)
        assert rcpt(gw, "user@example.com")[0] == expected
    finally:
        gw.close()


def test_silent_downstream_times_out_without_5xx(tmp_path, dns_zone):
    # A listener that accepts and never says a word.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    held = []
    stop = threading.Event()

    def accept():
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(silent.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    gw = PolicyGateway(tmp_path, downstream=f"127.0.0.1:{silent.getsockname()[1]}")
    try:
        gw.set(callout_enabled=True, callout_timeout=1.0)
        started = time.monotonic()
        assert rcpt(gw, "user@example.com")[0] == 250
        assert time.monotonic() - started < 5
    finally:
        gw.close()
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        silent.close()


def test_transports_choose_the_next_hop(tmp_path, dns_zone, downstream):
    gw = PolicyGateway(tmp_path, downstream=f"127.0.0.1:{free_port()}",
                       relay_domains="example.com,example.net",
                       transports=f"example.net=127.0.0.1:{downstream.port}")
    try:
        gw.set(callout_enabled=True)
        assert rcpt(gw, "ghost@example.net")[0] == 550
        assert downstream.probes() == 1
    finally:
        gw.close()
