"""URI extraction (compiled scanner and its twin) and URI blocklist lookups
against the loopback DNS server."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from core import config
from core.message import ParsedMessage, Part
from core.spam import SpamFilter, uri_py, uribl, uris
from tests.support.system import need
from tests.support import paths

CORPUS = paths.CORPUS / "dev"


@pytest.fixture(scope="module")
def compiled():
    need(uris.COMPILED, "compiled core.fast._uri (setup.py build_ext)")
    return uris.scanner(True)


def text_message(text: str, ctype: str = "text/plain") -> ParsedMessage:
    return ParsedMessage(headers=[("Subject", "links")], subject="links",
                         parts=[Part(path="", content_type=ctype, text=text)])


HOSTILE = [
    b"", b":", b"://", b"://://", b"http://", b"http:// ", b"@@@", b"[.](.){.}",
    b"a . b . c", b" . . . ", b"x" * 400 + b".com", b"http://" + b"a." * 300,
    b"http://u@@v@w.example.net", b"www." * 100, bytes(range(256)),
    "http://b\u00fccher.de/ \u65e5\u672c.jp".encode(), b"\xff\xfe.\xc3.com",
]


def test_scanner_twins_agree(compiled):
    rng = random.Random(7)
    alphabet = b"ab.:/ @[](){}%-XW0x\xc3\xbc\n"
    inputs = HOSTILE + [bytes(rng.choice(alphabet) for _ in range(rng.randrange(300)))
                        for _ in range(2000)]
    if CORPUS.is_dir():
        inputs += [f.read_bytes() for f in sorted(CORPUS.glob("*/*.eml"))[::150]]
    for data in inputs:
        assert compiled.hosts(data) == uri_py.hosts(data), data[:80]
        assert compiled.hosts(data, 3) == uri_py.hosts(data, 3)


def test_scanner_finds_obfuscated_forms():
    found = uri_py.hosts(b"hxxp://user@WWW.Evil.Example.net/x, "
                         b"www . spam . example.com "
                         b"bad[.]example(.)org http://  %77%77%77.example.org/")
    assert found == [(b"www.evil.example.net", True), (b"www.spam.example.com", False),
                     (b"bad.example.org", False), (b"%77%77%77.example.org", True)]


@pytest.mark.parametrize("raw,bare,host,domain", [
    (b"www.evil.example.net", False, "www.evil.example.net", "example.net"),
    (b"%77%77%77.example.org", False, "www.example.org", "example.org"),
    (b"a.b.example.co.uk", True, "a.b.example.co.uk", "example.co.uk"),
    ("b\u00fccher.de".encode(), True, "xn--bcher-kva.de", "xn--bcher-kva.de"),
    (b"0xc0000201", False, "192.0.2.1", "192.0.2.1"),
    (b"3221225985", False, "192.0.2.1", "192.0.2.1"),
    (b"192.0.2.1", True, "192.0.2.1", "192.0.2.1"),
])
def test_normalise(raw, bare, host, domain):
    uri = uris.normalise(raw, bare)
    assert uri is not None and (uri.host, uri.domain) == (host, domain)


@pytest.mark.parametrize("raw", [b"e.g", b"ok.", b"co.uk", b"x..example.com",
                                 b"3221225985", b"evil.example", b"bad_tld.zzzz"])
def test_normalise_rejects(raw):
    assert uris.normalise(raw, bare=True) is None


def test_extract_from_html_and_text():
    html = ('<a href="http://&#115;pam.example.com/win">www.bank.example.org</a>'
            '<img src="https://cdn.example.net/p.gif"> visit shop.example.co.uk!')
    found = [u.host for u in uris.extract(text_message(html, "text/html"))]
    assert found == ["spam.example.com", "www.bank.example.org", "cdn.example.net",
                     "shop.example.co.uk"]
    assert [u.domain for u in uris.domains(text_message(html, "text/html"), 2)] == [
        "example.com", "example.org"]


@pytest.fixture
def zones(dns_server):
    uribl.CACHE.clear()
    dns_server.add("example.net.multi.uribl.test", "A", "127.0.0.4")
    dns_server.add("example.org.multi.uribl.test", "A", "127.255.255.254")
    dns_server.add("1.2.0.192.multi.uribl.test", "A", "127.0.0.2")
    dns_server.add("example.net.values.uribl.test", "A", "127.0.1.3")
    return dns_server


def settings_with(tmp_path, **overrides):
    empty = tmp_path / "empty.conf"
    empty.write_text("")
    values = {"data_dir": str(tmp_path)}
    values.update(overrides)
    return config.load(empty, environ={}, overrides=values)


def test_blocklist_hits_and_filters(zones, tmp_path):
    parsed = text_message("go to http://evil.example.net/ or http://192.0.2.1/ "
                          "or www.example.org")
    s = settings_with(tmp_path, uribl_zones="multi.uribl.test/0x04:3.5")
    hits = uribl.UriBlocklist(s).check(parsed)
    assert [(h.zone, h.domain, h.answer, h.score, h.test) for h in hits] == [
        ("multi.uribl.test", "example.net", "127.0.0.4", 3.5, "URIBL_MULTI")]

    # Bit 2 is not in 0x04's answer; the IP's answer 127.0.0.2 has it.
    hits = uribl.UriBlocklist(settings_with(
        tmp_path, uribl_zones="multi.uribl.test/0x02")).check(parsed)
    assert [(h.domain, h.answer) for h in hits] == [("192.0.2.1", "127.0.0.2")]

    hits = uribl.UriBlocklist(settings_with(
        tmp_path, uribl_zones="values.uribl.test=127.0.1.2|127.0.1.3:4")).check(parsed)
    assert [(h.domain, h.score) for h in hits] == [("example.net", 4.0)]


def test_error_answers_never_count(zones, tmp_path):
    parsed = text_message("see www.example.org today")
    hits = uribl.UriBlocklist(settings_with(
        tmp_path, uribl_zones="multi.uribl.test")).check(parsed)
    assert hits == []


def test_lookups_are_cached_and_bounded(zones, tmp_path):
    names = " ".join(f"http://host{i}.example{i}.com/" for i in range(10))
    parsed = text_message(names)
    s = settings_with(tmp_path, uribl_zones="multi.uribl.test", uribl_max_lookups=3)
    before = len(zones.queries)
    uribl.UriBlocklist(s).check(parsed)
    asked = [q for q, _ in zones.queries[before:]]
    assert asked == [f"example{i}.com.multi.uribl.test." for i in range(3)]
    uribl.UriBlocklist(s).check(parsed)
    assert len(zones.queries) == before + 3


def test_a_dead_resolver_costs_one_timeout_then_is_skipped(tmp_path, monkeypatch,
                                                          dns_zone):
    import time

    # The loopback server answers nothing at all for these names.
    dns_zone("\n".join(f"example{i}.com.down.uribl.test. TIMEOUT -"
                       for i in range(10)))
    monkeypatch.setattr(uribl, "LOOKUP_SECONDS", 0.3)
    uribl.CACHE.clear()
    blocklist = uribl.UriBlocklist(settings_with(
        tmp_path, uribl_zones="down.uribl.test"))
    parsed = text_message(" ".join(f"http://a{i}.example{i}.com/" for i in range(10)))
    started = time.monotonic()
    assert blocklist.check(parsed) == []
    assert blocklist.check(parsed) == []
    assert time.monotonic() - started < 1.5


def test_bad_zone_entries_say_what_is_wrong():
    with pytest.raises(uribl.ZoneError, match="not a score"):
        uribl.parse_zone("multi.surbl.org:lots")
    with pytest.raises(uribl.ZoneError, match="bitmask"):
        uribl.parse_zone("multi.surbl.org/zz")
    with pytest.raises(uribl.ZoneError, match="zone name"):
        uribl.parse_zone("nodots")


def test_spam_filter_adds_uri_points(zones, tmp_path):
    from core import db

    s = settings_with(tmp_path, uribl_zones="multi.uribl.test/0x04:3.5")
    database = db.open_database(s.database_url)
    db.migrate(database)
    try:
        result = SpamFilter(s).check(text_message("buy at http://evil.example.net/"))
    finally:
        database.close()
    assert result.score == 3.5 and result.uri_hits[0].test == "URIBL_MULTI"
    assert "not trained" in result.note


def test_lookups_go_to_the_configured_dns_servers(dns_server, tmp_path):
    # A filter worker applies dns_servers (core.dns.configure_from): URI
    # lookups must not fall back to the machine's own resolver.
    from core import dns as portdns
    from tests.support import dnsserver

    own = dnsserver.start()
    own.add("example.net.own.uribl.test", "A", "127.0.0.2")
    uribl.CACHE.clear()
    settings = settings_with(tmp_path, uribl_zones="own.uribl.test",
                             dns_servers=f"127.0.0.1:{own.port}")
    portdns.configure_from(settings)
    try:
        parsed = ParsedMessage(parts=[Part(path="1", content_type="text/plain",
                                           text="see http://www.example.net/x")])
        hits = SpamFilter(settings).check(parsed).uri_hits
        assert [(h.zone, h.domain) for h in hits] == [("own.uribl.test",
                                                        "example.net")]
        assert own.asked("example.net.own.uribl.test")
        assert not dns_server.asked("example.net.own.uribl.test")
    finally:
        portdns.configure()
        own.sock.close()


def test_a_bad_zone_or_dns_server_stops_the_configuration(tmp_path):
    with pytest.raises(config.ConfigError, match="bitmask"):
        settings_with(tmp_path, uribl_zones="uribl.test/=127.0.0.2:3.5")
    with pytest.raises(config.ConfigError, match="DNS server addresses"):
        settings_with(tmp_path, dns_servers="not a server!")
    assert settings_with(tmp_path, dns_servers="127.0.0.1:5353, [::1]:53").dns_servers
