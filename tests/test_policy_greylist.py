"""Greylisting through real SMTP sessions, with the policy clock fast-forwarded
instead of sleeping: before and after the delay, after the retry window and
the lifetime, IPv4 /24 and IPv6 /64 networks, sender normalisation, the
big-provider SPF exemption and the purge of expired triplets."""

from __future__ import annotations

import pytest

from core.models import GreylistTriplet
from core.policy.greylist import client_network, normalise_sender
from tests.support.policyharness import gateway  # noqa: F401

DAY = 86400.0


@pytest.fixture
def grey(gateway):
    gateway.set(greylist_enabled=True, greylist_delay=300)
    return gateway


def attempt(gw, peer, sender="news@example.org", rcpt="user@example.com"):
    client = gw.client(peer)
    try:
        client.cmd("EHLO mail.example.org")
        client.cmd(f"MAIL FROM:<{sender}>")
        return client.cmd(f"RCPT TO:<{rcpt}>")
    finally:
        client.close()


def test_deferred_until_the_delay_then_accepted(grey):
    code, text = attempt(grey, "192.0.2.200")
    assert code == 450 and text.startswith("4.7.1 ") and "300 seconds" in text
    grey.clock.advance(120)
    code, text = attempt(grey, "192.0.2.200")
    assert code == 450 and "180 seconds" in text
    grey.clock.advance(200)
    assert attempt(grey, "192.0.2.201")[0] == 250  # same /24
    # Known now: later mail of the triplet passes at once.
    grey.clock.advance(10 * DAY)
    assert attempt(grey, "192.0.2.202")[0] == 250


def test_other_network_sender_or_recipient_is_a_new_triplet(grey):
    attempt(grey, "192.0.2.200")
    grey.clock.advance(400)
    assert attempt(grey, "192.0.2.200")[0] == 250
    assert attempt(grey, "192.0.3.200")[0] == 450
    assert attempt(grey, "192.0.2.200", sender="other@example.org")[0] == 450
    assert attempt(grey, "192.0.2.200", rcpt="boss@example.com")[0] == 450


def test_ipv6_same_64_passes_other_64_does_not(grey):
    assert attempt(grey, "2001:db8:4:7::10")[0] == 450
    grey.clock.advance(400)
    assert attempt(grey, "2001:0db8:0004:0007:0000:0000:0000:0022")[0] == 250
    assert attempt(grey, "2001:db8:4:8::10")[0] == 450


def test_retry_after_the_window_starts_over(grey):
    grey.set(greylist_retry_window=DAY)
    attempt(grey, "192.0.2.200")
    grey.clock.advance(DAY + 60)
    assert attempt(grey, "192.0.2.200")[0] == 450
    grey.clock.advance(400)
    assert attempt(grey, "192.0.2.200")[0] == 250


def test_known_triplet_expires_after_its_lifetime(grey):
    attempt(grey, "192.0.2.200")
    grey.clock.advance(400)
    assert attempt(grey, "192.0.2.200")[0] == 250
    grey.clock.advance(36 * DAY + 60)
    assert attempt(grey, "192.0.2.200")[0] == 450


def test_verp_and_tag_senders_are_one_sender(grey):
    attempt(grey, "192.0.2.200", sender="bounce-1234-77@lists.example.org")
    grey.clock.advance(400)
    assert attempt(grey, "192.0.2.200",
                   sender="bounce-5678-78@lists.example.org")[0] == 250
    attempt(grey, "192.0.2.200", sender="alice+one@example.org")
    grey.clock.advance(400)
    assert attempt(grey, "192.0.2.200", sender="Alice+two@example.org")[0] == 250


def test_expired_triplets_are_purged(grey):
    attempt(grey, "192.0.2.200")
    attempt(grey, "192.0.2.10", sender="x@example.org")
    assert GreylistTriplet.select().count() == 2
    grey.clock.advance(3 * DAY)
    removed = grey.run(grey.policy.by_name["greylist"].purge())
    assert removed == 2 and GreylistTriplet.select().count() == 0


def test_spf_pass_from_big_provider_skips(grey, dns_zone):
    dns_zone('bigmail.example. TXT "v=spf1 ip4:203.0.113.0/24 -all"')
    grey.set(greylist_spf_skip_domains=["bigmail.example"])
    assert attempt(grey, "203.0.113.9", sender="someone@bigmail.example")[0] == 250
    # Not SPF-authorised: greylisted like anyone.
    assert attempt(grey, "198.51.100.9", sender="someone@bigmail.example")[0] == 450


def test_smtp_welcome_recipient_skips(grey):
    grey.add("smtp_welcome", "recipient", "postmaster@example.com")
    assert attempt(grey, "192.0.2.200", rcpt="postmaster@example.com")[0] == 250
    assert attempt(grey, "192.0.2.200")[0] == 450


def test_keys():
    assert client_network("192.0.2.77") == "192.0.2.0/24"
    assert client_network("2001:db8:4:7::10") == "2001:db8:4:7::/64"
    assert client_network("::ffff:192.0.2.77") == "192.0.2.0/24"
    assert client_network("2001:db8:4:7::10", ipv6_prefix=48) == "2001:db8:4::/48"
    assert normalise_sender("") == ""
    assert normalise_sender("prvs=1234abcd=Alice@Example.ORG") == "alice@example.org"
    assert normalise_sender("list-bounces+x=y@example.org") == \
        "list-bounces@example.org"
    assert normalise_sender("b-20261204-1@example.org") == "b-#-#@example.org"
