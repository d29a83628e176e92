"""HELO checks and per-client limits through real SMTP sessions."""

from __future__ import annotations

import pytest

from core.policy.helo import is_fqdn
from tests.support.policyharness import gateway  # noqa: F401


def rcpt(gw, helo="mail.example.org", peer="192.0.2.10", rcpts=1):
    client = gw.client(peer)
    try:
        client.cmd(f"EHLO {helo}")
        client.cmd("MAIL FROM:<a@example.org>")
        return [client.cmd(f"RCPT TO:<u{i}@example.com>") for i in range(rcpts)]
    finally:
        client.close()


def test_helo_checks_off_by_default(gateway):
    assert rcpt(gateway, helo="localhost")[0][0] == 250


@pytest.mark.parametrize("helo,code", [
    ("mail.example.org", 250), ("[192.0.2.10]", 250), ("bareword", 450),
    ("mx.example.com", 450), ("192.0.2.10", 450), ("localhost", 450),
])
def test_helo_checks(gateway, helo, code):
    gateway.set(helo_enabled=True)
    assert rcpt(gateway, helo=helo)[0][0] == code


def test_helo_permanent(gateway):
    gateway.set(helo_enabled=True, helo_permanent=True)
    code, text = rcpt(gateway, helo="bareword")[0]
    assert code == 504 and text.startswith("5.5.2 ")


def test_recipients_per_message(gateway):
    gateway.set(limits_max_recipients=2)
    codes = [code for code, _ in rcpt(gateway, rcpts=3)]
    assert codes == [250, 250, 452]


def test_concurrent_connections(gateway):
    gateway.set(limits_max_connections=2)
    first, second = gateway.client("192.0.2.10"), gateway.client("192.0.2.10")
    third = gateway.client("192.0.2.10")
    other = gateway.client("192.0.2.11")
    try:
        assert [c.greeting[0] for c in (first, second, third, other)] == [
            220, 220, 421, 220]
    finally:
        for c in (first, second, third, other):
            c.close()
    gateway.run(_settle())
    again = gateway.client("192.0.2.10")
    assert again.greeting[0] == 220
    again.close()


async def _settle():
    import asyncio

    await asyncio.sleep(0.2)  # let the server run its on_disconnect hooks


def test_connection_rate(gateway):
    gateway.set(limits_connection_rate=3, limits_rate_window=60)
    greetings = []
    for _ in range(4):
        client = gateway.client("192.0.2.10")
        greetings.append(client.greeting[0])
        client.close()
    assert greetings == [220, 220, 220, 421]
    gateway.clock.advance(61)
    client = gateway.client("192.0.2.10")
    assert client.greeting[0] == 220
    client.close()


def test_message_rate(gateway):
    gateway.set(limits_message_rate=2, limits_rate_window=60)
    client = gateway.client("192.0.2.10")
    try:
        client.cmd("EHLO mail.example.org")
        codes = []
        for _ in range(3):
            codes.append(client.cmd("MAIL FROM:<a@example.org>")[0])
            client.cmd("RSET")
        assert codes == [250, 250, 450]
    finally:
        client.close()


def test_trusted_clients_are_not_limited(gateway):
    gateway.set(limits_max_recipients=1)
    codes = [code for code, _ in rcpt(gateway, peer="127.0.0.1", rcpts=2)]
    assert codes == [250, 250]


def test_fqdn():
    assert is_fqdn("mail.example.org") and is_fqdn("[192.0.2.1]")
    assert is_fqdn("[IPv6:2001:db8::1]") and is_fqdn("a-b.example.")
    for name in ("localhost", "192.0.2.1", "[999.1.1.1]", "-x.example.org",
                 "a..b", "under_score.example"):
        assert not is_fqdn(name)
