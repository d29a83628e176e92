"""SPF through real SMTP sessions, with the loopback DNS server answering.

Covers the RFC 7208 verdicts, the s4.6.4 limits (10 DNS-querying terms, 2
void lookups, include and redirect loops, the time limit), macro expansion
for IPv4 and IPv6 clients, and the headers on accepted mail.
"""

from __future__ import annotations

import time

import pytest

from core import replies
from tests.support.policyharness import PolicyGateway, gateway  # noqa: F401

ZONE = """
ok.spftest.example.        TXT "v=spf1 ip4:192.0.2.50 ip6:2001:db8:5::/48 -all"
fail.spftest.example.      TXT "v=spf1 ip4:198.51.100.0/24 -all exp=why.spftest.example"
why.spftest.example.       TXT "Mail from %{d} may not come from %{i}"
soft.spftest.example.      TXT "v=spf1 ip4:198.51.100.0/24 ~all"
neutral.spftest.example.   TXT "v=spf1 ?all"
loop.spftest.example.      TXT "v=spf1 include:loop.spftest.example ip4:192.0.2.50 -all"
ping.spftest.example.      TXT "v=spf1 redirect=pong.spftest.example"
pong.spftest.example.      TXT "v=spf1 redirect=ping.spftest.example"
syntax.spftest.example.    TXT "v=spf1 ip4:192.0.2.50 frobnicate -all"
broken.spftest.example.    SERVFAIL -
slow.spftest.example.      TIMEOUT -
50.2.0.192.in-addr._spf.macro.spftest.example. A 127.0.0.2
mta.helofail.example.      TXT "v=spf1 ip4:203.0.113.1 -all"
mta.helopass.example.      TXT "v=spf1 ip4:192.0.2.50 -all"
"""

# Three (and two) a: terms naming hosts that do not exist: void lookups.
VOIDS = "v=spf1 a:v1.spftest.example a:v2.spftest.example"
ZONE += (
    f'void.spftest.example. TXT "{VOIDS}" " a:v3.spftest.example'
    ' ip4:192.0.2.50 -all"\n'
    f'twovoid.spftest.example. TXT "{VOIDS} ip4:192.0.2.50 -all"\n'
    'macro.spftest.example. TXT '
    '"v=spf1 exists:%{ir}.%{v}._spf.macro.spftest.example -all"\n'
)

# The top include, then an a and an include in each of l1..l5: the
# authorising ip4 in l6 sits behind the 11th DNS-querying term.
CHAIN = "\n".join(
    f'l{i}.chain.spftest.example. TXT "v=spf1 a:a{i}.chain.spftest.example '
    f'include:l{i + 1}.chain.spftest.example -all"\n'
    f"a{i}.chain.spftest.example. A 198.51.100.{i}"
    for i in range(1, 6)
) + '\nl6.chain.spftest.example. TXT "v=spf1 ip4:192.0.2.50 -all"\n' \
    'chain.spftest.example. TXT "v=spf1 include:l1.chain.spftest.example -all"\n'


@pytest.fixture
def spf(gateway, dns_zone):
    dns_zone(ZONE + CHAIN)
    gateway.set(spf_enabled=True)
    return gateway


def send(gw, sender, peer="192.0.2.50", helo="mail.example.org"):
    client = gw.client(peer)
    try:
        codes = client.transaction(sender, "user@example.com", helo=helo)
        return codes, getattr(client, "last_rcpt", "")
    finally:
        client.close()


def headers(gw, index=-1) -> str:
    envelope, data = gw.queued()[index]
    return data.split(b"\r\n\r\n", 1)[0].decode()


def test_pass_is_accepted_with_headers(spf):
    assert send(spf, "a@ok.spftest.example")[0] == [250, 250, 250, 250]
    head = headers(spf)
    assert "Received-SPF: Pass (mx.example.com: domain of ok.spftest.example" in head
    assert "Authentication-Results: mx.example.com; spf=pass " \
           "smtp.mailfrom=ok.spftest.example" in head


def test_fail_is_refused_with_the_explanation(spf):
    codes, text = send(spf, "a@fail.spftest.example")
    assert codes == [250, 250, 550]
    assert text.startswith("5.7.23 ")
    # The explanation TXT, with its macros expanded (RFC 7208 s6.2).
    assert "Mail from fail.spftest.example may not come from 192.0.2.50" in text
    assert spf.queued() == []


def test_fail_is_accepted_when_rejecting_is_off(spf):
    spf.set(spf_reject_fail=False)
    assert send(spf, "a@fail.spftest.example")[0][-1] == 250
    assert "spf=fail" in headers(spf)


def test_softfail_and_neutral_add_score(spf):
    spf.set(spf_softfail_score=2.5, spf_neutral_score=0.5)
    assert send(spf, "a@soft.spftest.example")[0][-1] == 250
    assert send(spf, "a@neutral.spftest.example")[0][-1] == 250
    soft, neutral = spf.queued()
    scores = sorted(env.smtp_score for env, _ in (soft, neutral))
    assert scores == [0.5, 2.5]
    assert "Received-SPF: SoftFail" in headers(spf, 0) + headers(spf, 1)


@pytest.mark.parametrize("domain", ["loop", "ping", "chain", "void", "syntax"])
def test_limits_and_loops_are_permerror(spf, domain):
    started = time.monotonic()
    codes, _ = send(spf, f"x@{domain}.spftest.example")
    assert time.monotonic() - started < 5  # hang guard, not a benchmark
    assert codes == [250, 250, 250, 250]
    assert "spf=permerror" in headers(spf)


def test_two_void_lookups_are_allowed(spf):
    # RFC 7208 s4.6.4: the third void lookup is the error, not the second.
    assert send(spf, "x@twovoid.spftest.example")[0][-1] == 250
    assert "spf=pass" in headers(spf)


def test_permerror_refused_when_configured(spf):
    spf.set(spf_permerror="reject")
    codes, text = send(spf, "x@loop.spftest.example")
    assert codes[-1] == 550 and text.startswith("5.5.2 ")


def test_temperror_accepted_or_deferred(spf):
    assert send(spf, "x@broken.spftest.example")[0][-1] == 250
    assert "spf=temperror" in headers(spf)
    spf.set(spf_temperror="defer")
    codes, text = send(spf, "y@broken.spftest.example")
    assert codes[-1] == 451 and text.startswith("4.4.3 ")


def test_time_limit_gives_temperror(tmp_path, dns_zone):
    dns_zone(ZONE)
    gw = PolicyGateway(tmp_path, dns_timeout=1.0)
    try:
        gw.set(spf_enabled=True, spf_timeout=1.0)
        started = time.monotonic()
        assert send(gw, "x@slow.spftest.example")[0][-1] == 250
        assert time.monotonic() - started < 6
        assert "spf=temperror" in headers(gw)
    finally:
        gw.close()


def test_macro_ir_and_v_for_ipv4(spf):
    assert send(spf, "a@macro.spftest.example")[0][-1] == 250
    assert "spf=pass" in headers(spf)


def test_macro_ir_and_v_for_ipv6(spf, dns_zone):
    ip = "2001:db8:85a3::8a2e:370:7334"
    nibbles = "4.3.3.7.0.7.3.0.e.2.a.8.0.0.0.0.0.0.0.0.3.a.5.8.8.b.d.0.1.0.0.2"
    dns_zone(f"{nibbles}.ip6._spf.macro.spftest.example. A 127.0.0.2")
    assert send(spf, "a@macro.spftest.example", peer=ip)[0][-1] == 250
    assert "spf=pass" in headers(spf)
    assert f"client-ip={ip}" in headers(spf)


def test_ipv6_client_pass_and_fail(spf):
    assert send(spf, "a@ok.spftest.example", peer="2001:db8:5::25")[0][-1] == 250
    assert send(spf, "a@ok.spftest.example", peer="2001:db8:6::25")[0][-1] == 550


def test_helo_fail_is_refused(spf):
    codes, text = send(spf, "a@ok.spftest.example", helo="mta.helofail.example")
    assert codes[-1] == 550 and "mta.helofail.example" in text


def test_null_sender_uses_the_helo_identity(spf):
    assert send(spf, "", helo="mta.helopass.example")[0][-1] == 250
    head = headers(spf)
    assert "identity=helo" in head
    assert "spf=pass smtp.helo=mta.helopass.example" in head


def test_trusted_client_is_not_checked(spf):
    # 127.0.0.1 is in trusted_networks: outbound mail is not SPF-checked.
    assert send(spf, "a@fail.spftest.example", peer="127.0.0.1")[0][-1] == 250
    assert "Received-SPF" not in headers(spf)


def test_reply_catalogue_code():
    assert replies.SPF_FAIL.status == "5.7.23" and replies.SPF_FAIL.code == 550
