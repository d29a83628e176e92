"""Cases 050, 052, 054 and 056: their session.txt played by the casescript
runner against the SMTP server with the real policy, DNS answers from each
case's dns.txt on the loopback server, ``@wait`` moving the policy clock."""

from __future__ import annotations

import re

import pytest

from tests.support import casescript
from tests.support.paths import case
from tests.support.policyharness import gateway  # noqa: F401


def play(gw, name: str, dns_zone):
    folder = case(name)
    script = casescript.parse(folder)
    for path in script.dns:
        dns_zone(path=path)
    result = casescript.run(script, "127.0.0.1", gw.port, on_wait=gw.clock.advance)
    result.check()
    return result


def spf_results(gw) -> list[str]:
    found = []
    for _, data in gw.queued():
        head = data.split(b"\r\n\r\n", 1)[0].decode()
        match = re.search(r"^Authentication-Results: [^;]+; spf=(\w+)", head, re.M)
        found.append(match.group(1) if match else "-")
    return found


@pytest.mark.case("050")
def test_050_spf_lookup_limit_and_loops(gateway, dns_zone):
    gateway.set(spf_enabled=True)
    play(gateway, "050", dns_zone)
    # The four accepted transactions: pass, then the chain, include loop and
    # redirect loop, all permerror (the refused spf-fail one is the "-").
    assert spf_results(gateway) == ["pass", "permerror", "permerror", "permerror"]
    for _, data in gateway.queued():
        assert b"Received-SPF: " in data


@pytest.mark.case("052")
def test_052_spf_macro_ir_ipv6(gateway, dns_zone):
    gateway.set(spf_enabled=True)
    play(gateway, "052", dns_zone)
    assert spf_results(gateway) == ["pass", "pass"]
    for _, data in gateway.queued():
        assert b"Received-SPF: Pass " in data


@pytest.mark.case("054")
@pytest.mark.parametrize("zone", ["zen.spamhaus.org=127.0.0.[2..11]",
                                  "zen.spamhaus.org"])
def test_054_dnsbl_error_return_codes(gateway, dns_zone, zone, caplog):
    caplog.set_level("WARNING", logger="core.policy.dnsbl")
    gateway.set(dnsbl_enabled=True, dnsbl_zones=[zone])
    play(gateway, "054", dns_zone)
    clients = sorted(env.client_ip for env, _ in gateway.queued())
    assert clients == ["192.0.2.101", "192.0.2.102", "192.0.2.103"]
    # The operator is told that the list refused to answer.
    for code in ("127.255.255.254", "127.255.255.255", "127.255.255.252"):
        assert code in caplog.text


@pytest.mark.case("054")
def test_054_refused_at_connect(gateway, dns_zone):
    gateway.set(dnsbl_enabled=True, dnsbl_stage="connect",
                dnsbl_zones=["zen.spamhaus.org=127.0.0.[2..11]"])
    result = play(gateway, "054", dns_zone)
    assert "554" in result.codes()
    assert len(gateway.queued()) == 3


@pytest.mark.case("056")
def test_056_greylist_ipv6_same_64(gateway, dns_zone):
    gateway.set(greylist_enabled=True, greylist_delay=300,
                greylist_ipv4_prefix=24, greylist_ipv6_prefix=64)
    play(gateway, "056", dns_zone)
    clients = [env.client_ip for env, _ in gateway.queued()]
    assert sorted(clients) == ["192.0.2.201", "2001:db8:4:7::22"]
