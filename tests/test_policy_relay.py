"""The 16 classic open-relay probes from an untrusted client: none may get a
250 at RCPT. The gateway relays only to its relay domains (example.com);
sender-specified routing in the local part (``%``, ``!``, a quoted ``@``)
of an address at a relay domain is the old trick to make the next server
relay, so it is refused too."""

from __future__ import annotations

import pytest

from tests.support.policyharness import gateway  # noqa: F401

PROBES = [
    ("", "victim@example.org"),  # null sender
    ("spammer@example.net", "victim@example.org"),  # foreign sender
    ("user@example.com", "victim@example.org"),  # our own domain as sender
    ("spammer@example.net", "victim@[198.51.100.7]"),  # IP-literal domain
    ("spammer@example.net", "victim@[IPv6:2001:db8::7]"),  # IPv6 literal
    ("spammer@example.net", "victim%example.org@example.com"),  # % hack
    ("spammer@example.net", "victim%example.org@[127.0.0.1]"),  # % hack, literal
    ("spammer@example.net", '"victim@example.org"'),  # quoted, no domain
    ("spammer@example.net", '"victim@example.org"@example.com'),  # quoted @
    ("spammer@example.net", "victim@example.org@example.com"),  # double @
    ("spammer@example.net", "@example.com:victim@example.org"),  # source route
    ("spammer@example.net", "@mx.example.com,@example.com:victim@example.org"),
    ("spammer@example.net", "example.org!victim"),  # bang path
    ("spammer@example.net", "example.org!victim@example.com"),  # bang at us
    ("spammer@example.net", "victim@localhost"),  # localhost
    ("spammer@example.net", "victim@[127.0.0.1]"),  # loopback literal
]


@pytest.mark.parametrize("sender,rcpt", PROBES,
                         ids=[f"{i:02d}" for i in range(1, len(PROBES) + 1)])
def test_relay_probe_refused(gateway, sender, rcpt):
    client = gateway.client("203.0.113.66")
    try:
        client.cmd("EHLO probe.example.net")
        assert client.cmd(f"MAIL FROM:<{sender}>")[0] == 250
        code, text = client.cmd(f"RCPT TO:<{rcpt}>")
    finally:
        client.close()
    assert code != 250 and code >= 400, f"RCPT TO:<{rcpt}> got {code} {text}"


@pytest.mark.case("013-quoted-local-part-roundtrip")
@pytest.mark.parametrize("rcpt", ['"a@b"@example.com', '"john smith"@example.com',
                                  '"local>part"@example.com'])
def test_quoted_mailboxes_are_not_routing(gateway, rcpt):
    """Case 013: a quoted local part that names no host is a mailbox.

    The routing check first refused every local part holding an '@', so the
    valid ``"a@b"@example.com`` of case 013 got 550 through the real policy.
    """
    client = gateway.client("192.0.2.10")
    try:
        client.cmd("EHLO client.example.net")
        assert client.cmd("MAIL FROM:<sender@example.net>")[0] == 250
        code, text = client.cmd(f"RCPT TO:<{rcpt}>")
    finally:
        client.close()
    assert code == 250, f"RCPT TO:<{rcpt}> got {code} {text}"
