"""core.dns against the loopback DNS server: answers, errors, cache, servers."""

from __future__ import annotations

import asyncio

import dns.resolver
import pytest

from core import dns as portdns

ZONE = """
host.dnstest.example.     A     192.0.2.7
host.dnstest.example.     AAAA  2001:db8::7
txt.dnstest.example.      TXT   "v=spf1 " "ip4:192.0.2.0/24 " "-all"
mx.dnstest.example.       MX    10 mail.dnstest.example.
7.2.0.192.in-addr.arpa.   PTR   host.dnstest.example.
alias.dnstest.example.    CNAME host.dnstest.example.
broken.dnstest.example.   SERVFAIL -
refused.dnstest.example.  REFUSED -
slow.dnstest.example.     TIMEOUT -
"""


@pytest.fixture
def zone(dns_zone):
    server = dns_zone(ZONE)
    yield server
    portdns.configure()


def test_answers_by_type(zone):
    assert portdns.lookup("host.dnstest.example", "A") == ["192.0.2.7"]
    assert portdns.lookup("host.dnstest.example", "AAAA") == ["2001:db8::7"]
    # RFC 7208 s3.3: strings of one TXT record are joined without spaces.
    assert portdns.lookup("txt.dnstest.example", "TXT") == [
        "v=spf1 ip4:192.0.2.0/24 -all"]
    assert portdns.lookup("mx.dnstest.example", "MX") == ["10 mail.dnstest.example"]
    assert portdns.lookup("7.2.0.192.in-addr.arpa", "PTR") == ["host.dnstest.example"]


def test_missing_names_and_types_are_empty(zone):
    assert portdns.lookup("nothing.dnstest.example", "A") == []
    assert portdns.lookup("host.dnstest.example", "MX") == []
    # A name no resolver can ask (label over 63 octets) has no data either.
    assert portdns.lookup("x" * 70 + ".dnstest.example", "A") == []


def test_servfail_refused_and_timeout_are_temporary(zone):
    portdns.configure(timeout=0.5)
    for name in ("broken", "refused", "slow"):
        with pytest.raises(portdns.DNSTempError):
            portdns.lookup(f"{name}.dnstest.example", "A")


def test_async_lookup_matches_sync(zone):
    async def ask():
        return await asyncio.gather(
            portdns.alookup("host.dnstest.example", "A"),
            portdns.alookup("txt.dnstest.example", "TXT"),
            portdns.alookup("nothing.dnstest.example", "A"),
        )

    assert asyncio.run(ask()) == [["192.0.2.7"], ["v=spf1 ip4:192.0.2.0/24 -all"], []]


def test_async_timeout_is_temporary(zone):
    portdns.configure(timeout=0.5)
    with pytest.raises(portdns.DNSTempError):
        asyncio.run(portdns.alookup("slow.dnstest.example", "A"))


def test_answers_and_nonexistence_are_cached(zone):
    portdns.lookup("host.dnstest.example", "A")
    portdns.lookup("host.dnstest.example", "A")
    portdns.lookup("nothing.dnstest.example", "A")
    portdns.lookup("nothing.dnstest.example", "A")
    assert zone.asked("host.dnstest.example", "A") == 1
    assert zone.asked("nothing.dnstest.example", "A") == 1


def test_configured_servers_are_used(zone):
    portdns.configure([f"127.0.0.1:{zone.port}"], timeout=1.0)
    assert portdns.lookup("host.dnstest.example", "A") == ["192.0.2.7"]
    assert portdns._sync_resolver() is not dns.resolver.get_default_resolver()


def test_default_resolver_object_is_used_when_no_servers(zone):
    portdns.configure()
    assert portdns._sync_resolver() is dns.resolver.get_default_resolver()
    # A replaced default applies at once, to sync and async lookups alike.
    saved = dns.resolver.default_resolver
    other = dns.resolver.Resolver(configure=False)
    other.nameservers = ["127.0.0.1"]
    other.port = zone.port
    other.lifetime = other.timeout = 1.0
    dns.resolver.default_resolver = other
    try:
        assert portdns._sync_resolver() is other
        assert asyncio.run(portdns.alookup("host.dnstest.example", "AAAA")) == [
            "2001:db8::7"]
    finally:
        dns.resolver.default_resolver = saved


def test_server_spec_parsing():
    assert portdns.parse_server("192.0.2.53") == ("192.0.2.53", 53)
    assert portdns.parse_server("192.0.2.53:5353") == ("192.0.2.53", 5353)
    assert portdns.parse_server("[2001:db8::53]:54") == ("2001:db8::53", 54)
    assert portdns.parse_server("::1") == ("::1", 53)
    with pytest.raises(ValueError):
        portdns.parse_server("192.0.2.53:0")
