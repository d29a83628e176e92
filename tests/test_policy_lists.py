"""Block, welcome and SMTP welcome lists through real SMTP sessions, and the
pattern forms (address, domain, subdomain wildcard, regex, null sender,
client network)."""

from __future__ import annotations

import pytest

from core.policy import store
from core.policy.lists import compile_pattern
from core.policy.store import PolicyError
from tests.support.policyharness import gateway  # noqa: F401


def send(gw, sender, rcpt="user@example.com", peer="192.0.2.10"):
    client = gw.client(peer)
    try:
        return client.transaction(sender, rcpt), getattr(client, "last_rcpt", "")
    finally:
        client.close()


def test_blocked_sender_refused_at_rcpt(gateway):
    gateway.add("block", "sender", "spam.example.org")
    codes, text = send(gateway, "x@spam.example.org")
    assert codes == [250, 250, 550]
    assert text.startswith("5.7.1 ") and "x@spam.example.org" in text
    assert send(gateway, "x@example.org")[0][-1] == 250


def test_blocked_recipient_refused(gateway):
    gateway.add("block", "recipient", "/^(sales|info)@/")
    assert send(gateway, "a@example.org", rcpt="Sales@example.com")[0][-1] == 550
    assert send(gateway, "a@example.org", rcpt="user@example.com")[0][-1] == 250


def test_welcome_wins_over_block_and_is_noted(gateway):
    gateway.add("block", "sender", "*.example.org")
    gateway.add("welcome", "sender", "friend@news.example.org")
    assert send(gateway, "other@news.example.org")[0][-1] == 550
    assert send(gateway, "friend@news.example.org")[0][-1] == 250
    envelope, _ = gateway.queued()[0]
    assert "welcome_list=sender" in envelope.smtp_notes


def test_welcome_recipient_is_noted(gateway):
    gateway.add("welcome", "recipient", "user@example.com")
    assert send(gateway, "a@example.org")[0][-1] == 250
    envelope, _ = gateway.queued()[0]
    assert "welcome_list=recipient" in envelope.smtp_notes


def test_smtp_welcome_sender_skips_checks(gateway, dns_zone):
    dns_zone('strict.example. TXT "v=spf1 -all"')
    gateway.set(spf_enabled=True, greylist_enabled=True)
    assert send(gateway, "a@strict.example")[0][-1] == 550
    gateway.add("smtp_welcome", "sender", "strict.example")
    assert send(gateway, "a@strict.example")[0][-1] == 250
    # Not noted for the content filter: the SMTP welcome list is SMTP-time only.
    envelope, data = gateway.queued()[0]
    assert envelope.smtp_notes == [] and b"Received-SPF" not in data


def test_smtp_welcome_client_network(gateway):
    gateway.set(greylist_enabled=True)
    gateway.add("smtp_welcome", "client", "2001:db8:9::/48")
    assert send(gateway, "a@example.org", peer="2001:db8:9:1::5")[0][-1] == 250
    assert send(gateway, "a@example.org", peer="2001:db8:8::5")[0][-1] == 450


def test_null_sender_pattern(gateway):
    gateway.add("block", "sender", "<>")
    assert send(gateway, "")[0][-1] == 550
    assert send(gateway, "a@example.org")[0][-1] == 250


def test_patterns():
    address = compile_pattern("sender", "Alice@Example.org")
    assert address("alice@example.org") and not address("bob@example.org")
    domain = compile_pattern("sender", "example.org")
    assert domain("x@EXAMPLE.org") and not domain("x@sub.example.org")
    assert compile_pattern("sender", "@example.org")("x@example.org")
    wildcard = compile_pattern("sender", "*.example.org")
    assert wildcard("x@a.b.example.org") and not wildcard("x@example.org")
    assert not wildcard("x@badexample.org")
    regex = compile_pattern("recipient", r"/^bounce-\d+@/")
    assert regex("bounce-12@example.com") and not regex("bounce-x@example.com")
    client = compile_pattern("client", "192.0.2.0/24")
    assert client("192.0.2.99") and client("::ffff:192.0.2.99")
    assert not client("198.51.100.1") and not client("2001:db8::1")
    for kind, bad in (("sender", "/[unclosed/"), ("client", "not-an-ip"),
                      ("sender", " ")):
        with pytest.raises(PolicyError):
            compile_pattern(kind, bad)


def test_list_entry_checks(gateway):
    with pytest.raises(PolicyError):
        store.add_list_entry("nosuch", "sender", "a@example.org")
    with pytest.raises(PolicyError):
        store.add_list_entry("block", "client", "192.0.2.1")
    with pytest.raises(PolicyError):
        store.add_list_entry("block", "sender", "/(/")
