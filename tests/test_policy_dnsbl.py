"""DNSBL through real SMTP sessions: weights, answer filters, the threshold,
error answers in 127.255.255.0/24, IPv6 clients, connect or RCPT stage."""

from __future__ import annotations

import pytest

from core.policy.dnsbl import parse_zone, reversed_name
from core.policy.store import PolicyError
from tests.support.policyharness import gateway  # noqa: F401

ZONE = """
# 192.0.2.1: listed by both lists; .2 only by the weak one; .3 in the strong
# one with a code outside its filter; .4 gets an error answer.
1.2.0.192.strong.bltest.example.   A  127.0.0.2
1.2.0.192.weak.bltest.example.     A  127.0.0.4
2.2.0.192.weak.bltest.example.     A  127.0.0.4
3.2.0.192.strong.bltest.example.   A  127.0.0.99
4.2.0.192.strong.bltest.example.   A  127.255.255.254
4.2.0.192.weak.bltest.example.     A  127.255.255.252
5.2.0.192.strong.bltest.example.   SERVFAIL -
6.2.0.192.strong.bltest.example.   A  127.0.0.3
6.2.0.192.strong.bltest.example.   A  127.255.255.255
"""
# 2001:db8:7::1, listed by the strong zone.
ZONE += ("1." + "0." * 19 + "7.0.0.0.8.b.d.0.1.0.0.2"
         ".strong.bltest.example. A 127.0.0.2\n")


@pytest.fixture
def bl(gateway, dns_zone):
    dns_zone(ZONE)
    gateway.set(dnsbl_enabled=True, dnsbl_threshold=2,
                dnsbl_zones=["strong.bltest.example=127.0.0.[2..11]*2",
                             "weak.bltest.example*1"])
    return gateway


def rcpt(gw, peer):
    client = gw.client(peer)
    try:
        if client.greeting[0] != 220:
            return client.greeting
        client.cmd("EHLO mail.example.org")
        client.cmd("MAIL FROM:<a@example.org>")
        return client.cmd("RCPT TO:<user@example.com>")
    finally:
        client.close()


def test_weights_add_up_to_the_threshold(bl):
    code, text = rcpt(bl, "192.0.2.1")
    assert code == 554 and text.startswith("5.7.1 ")
    assert "strong.bltest.example" in text and "weak.bltest.example" in text


def test_below_threshold_is_accepted(bl):
    assert rcpt(bl, "192.0.2.2")[0] == 250


def test_answer_outside_the_filter_does_not_count(bl):
    assert rcpt(bl, "192.0.2.3")[0] == 250


def test_error_answers_are_never_a_listing(bl, caplog):
    caplog.set_level("WARNING", logger="core.policy.dnsbl")
    assert rcpt(bl, "192.0.2.4")[0] == 250
    assert "127.255.255.254" in caplog.text and "query_refused_by_list" in caplog.text
    # A real code next to an error code still counts.
    assert rcpt(bl, "192.0.2.6")[0] == 554


def test_unanswerable_zone_is_not_a_listing(bl):
    assert rcpt(bl, "192.0.2.5")[0] == 250


def test_ipv6_client_is_looked_up_by_nibbles(bl):
    code, text = rcpt(bl, "2001:db8:7::1")
    assert code == 554 and "strong.bltest.example" in text
    assert rcpt(bl, "2001:db8:7::2")[0] == 250


def test_refusal_at_connect(bl):
    bl.set(dnsbl_stage="connect")
    code, text = rcpt(bl, "192.0.2.1")
    assert code == 554 and "blocked using" in text
    assert rcpt(bl, "192.0.2.2")[0] == 250


def test_smtp_welcome_client_skips_dnsbl(bl):
    bl.add("smtp_welcome", "client", "192.0.2.0/28")
    assert rcpt(bl, "192.0.2.1")[0] == 250


def test_zone_syntax():
    zone = parse_zone("zen.example=127.0.0.[2..11]*2")
    assert zone.name == "zen.example" and zone.weight == 2
    assert zone.counts("127.0.0.2") and zone.counts("127.0.0.11")
    assert not zone.counts("127.0.0.12") and not zone.counts("127.0.1.2")
    listed = parse_zone("list.example=127.0.[0..2;5].[4;6]")
    assert listed.counts("127.0.5.6") and not listed.counts("127.0.3.4")
    plain = parse_zone("plain.example")
    assert plain.weight == 1 and plain.counts("127.0.0.5")
    assert not plain.counts("192.0.2.1")
    for bad in ("zen.example=127.0.0", "zen.example=127.0.0.[9..2]", "=1.2.3.4",
                "zen.example*x"):
        with pytest.raises(PolicyError):
            parse_zone(bad)


def test_reversed_names():
    assert reversed_name("192.0.2.1") == "1.2.0.192"
    assert reversed_name("::ffff:192.0.2.1") == "1.2.0.192"
    assert reversed_name("2001:db8::1").endswith(".8.b.d.0.1.0.0.2")
    assert len(reversed_name("2001:db8::1").split(".")) == 32
