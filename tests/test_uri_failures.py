"""URI blocklist lookups that fail or are skipped are visible: the note of the
check, the stored clues, X-Spam-Status (URIBL_UNCHECKED), the log, the web
page, the API and ``portcullis track``; bad uribl_zones entries are refused;
the Why section labels the probability by the configured band; the track
and API page caps are said."""

from __future__ import annotations

import json
import logging

import pytest

from core import config, tracking
from core.models import Message, utcnow
from core.spam import uribl
from tests.support.filtering import filter_one
from tests.test_cli import run
from tests.test_uri import settings_with, text_message
from tests.test_web import build, login, seed, spool_of

DOWN = "down.uribl.test"
BAD = "bad.uribl.test"


@pytest.fixture
def fast(monkeypatch):
    # A timeout costs LOOKUP_SECONDS: keep it short for the suite.
    monkeypatch.setattr(uribl, "LOOKUP_SECONDS", 0.3)
    uribl.CACHE.clear()
    yield
    uribl.CACHE.clear()


def links(*numbers: int):
    return text_message(" ".join(f"http://a.example{n}.com/" for n in numbers))


def timeouts(count: int) -> str:
    return "\n".join(f"example{i}.com.{DOWN}. TIMEOUT -" for i in range(count))


# region the check's note


def test_a_timeout_is_noted_then_the_skip_is_noted(fast, tmp_path, dns_zone):
    server = dns_zone(timeouts(5))
    blocklist = uribl.UriBlocklist(settings_with(tmp_path, uribl_zones=DOWN))

    first = blocklist.examine(links(0, 1, 2))
    assert first.hits == [] and first.unchecked == 3
    assert "timed out" in first.note and "3 of 3 domains not checked" in first.note
    asked = len(server.queries)
    assert asked >= 1

    second = blocklist.examine(links(3, 4))
    assert second.unchecked == 2
    assert "lookups skipped" in second.note and "timed out" in second.note
    assert " s ago" in second.note and "2 of 2 domains not checked" in second.note
    # The skip window holds: no query went out for the second message.
    assert len(server.queries) == asked


def test_servfail_is_noted(fast, tmp_path, dns_zone):
    dns_zone(f"example0.com.{DOWN}. SERVFAIL -")
    checked = uribl.UriBlocklist(settings_with(tmp_path, uribl_zones=DOWN)).examine(
        links(0))
    assert "SERVFAIL" in checked.note and checked.unchecked == 1


def test_cached_listings_still_count_while_the_zone_is_skipped(fast, tmp_path,
                                                               dns_zone):
    dns_zone(f"example1.com.{DOWN}. A 127.0.0.2\n" + timeouts(1))
    blocklist = uribl.UriBlocklist(settings_with(tmp_path, uribl_zones=DOWN))
    assert [h.domain for h in blocklist.check(links(1))] == ["example1.com"]
    assert "timed out" in blocklist.examine(links(0)).note

    checked = blocklist.examine(links(5, 1))
    assert [h.domain for h in checked.hits] == ["example1.com"]
    assert "1 of 2 domains not checked" in checked.note


def test_the_zone_is_tried_again_after_the_window(fast, tmp_path, dns_zone,
                                                  monkeypatch):
    server = dns_zone(timeouts(1))
    monkeypatch.setattr(uribl, "BACKOFF_SECONDS", 0.0)
    blocklist = uribl.UriBlocklist(settings_with(tmp_path, uribl_zones=DOWN))
    blocklist.examine(links(0))
    server.remove(f"example0.com.{DOWN}")
    checked = blocklist.examine(links(0))
    assert checked.note == "" and checked.unchecked == 0


def test_the_lookup_cap_is_noted(fast, tmp_path, dns_zone):
    dns_zone("")
    blocklist = uribl.UriBlocklist(settings_with(tmp_path, uribl_zones=BAD,
                                                 uribl_max_lookups=3))
    assert "lookup cap reached" in blocklist.examine(links(0, 1, 2, 3, 4)).note
    assert blocklist.examine(links(0, 1, 2)).note == ""


def test_the_message_budget_is_noted(fast, tmp_path, dns_zone, monkeypatch):
    dns_zone("")
    monkeypatch.setattr(uribl, "MESSAGE_BUDGET", 0.0)
    checked = uribl.UriBlocklist(settings_with(tmp_path, uribl_zones=BAD)).examine(
        links(0, 1))
    assert "budget" in checked.note and checked.unchecked == 2


def test_a_long_note_is_bounded(fast, tmp_path, dns_zone, monkeypatch):
    # Each zone adds its part to the note; no lookup is needed for that.
    monkeypatch.setattr(uribl, "MESSAGE_BUDGET", 0.0)
    dns_zone("")
    zones = ",".join(f"z{i}.{DOWN}" for i in range(30))
    blocklist = uribl.UriBlocklist(settings_with(tmp_path, uribl_zones=zones))
    note = blocklist.examine(links(0)).note
    assert len(note) <= uribl.MAX_NOTE and note.endswith("...")


# endregion

# region through a filter worker


@pytest.fixture
def app(tmp_path, fast):
    application = build(tmp_path)
    yield application
    tracking.flush()


def _filter(app) -> str:
    data = (b"From: <win@example.org>\r\nTo: <bob@example.com>\r\n"
            b"Subject: links\r\n\r\nsee http://a.example0.com/ and "
            b"http://b.example1.com/\r\n")
    return filter_one(app, data, uribl_zones=(DOWN,), spam_quarantine_level=100.0)


def test_an_unchecked_message_says_so_everywhere(app, tmp_path, dns_zone, caplog):
    from core import users

    dns_zone(timeouts(2))
    with caplog.at_level(logging.INFO, logger="core.pipeline"):
        qid = _filter(app)

    lines = [r.getMessage() for r in caplog.records
             if "event=uribl_unchecked" in r.getMessage()]
    assert lines and lines[0].startswith(qid) and "timed out" in lines[0]

    clues = tracking.read_clues(Message.get(Message.qid == qid).spam_clues)
    assert "timed out" in clues["uri_note"] and clues["uri"] == []
    _env, out = spool_of(app).read("deliver", qid)
    status = next(line for line in out.split(b"\r\n")
                  if line.startswith(b"X-Spam-Status:"))
    assert b"URIBL_UNCHECKED" in status

    admin = app.test_client()
    login(admin)
    page = admin.get(f"/tracking/{qid}").text
    assert 'id="uri-note"' in page and "timed out" in page
    assert "No URI blocklist hits" not in page

    token = users.create_token("admin", "tests")
    data = app.test_client().get(f"/api/v1/messages/{qid}", headers={
        "Authorization": f"Bearer {token}"}).get_json()
    assert "timed out" in data["spam_clues"]["uri_note"]

    shown = run("track", "--qid", qid, conf=tmp_path / "portcullis.conf")
    assert shown.returncode == 0, shown.stderr
    assert "URI lookups not all made: URI lookups incomplete" in shown.stdout
    assert "timed out" in shown.stdout


def test_a_fully_checked_message_has_no_unchecked_test(app, dns_zone):
    dns_zone("")
    qid = _filter(app)
    assert tracking.read_clues(
        Message.get(Message.qid == qid).spam_clues)["uri_note"] == ""
    _env, out = spool_of(app).read("deliver", qid)
    assert b"URIBL_UNCHECKED" not in out


# endregion

# region zone entries


@pytest.mark.parametrize("entry,says", [
    ("bits.test/0x02:nan", "finite"),
    ("bits.test:inf", "finite"),
    ("bits.test:-inf", "finite"),
    ("bits.test:1e400", "finite"),
    ("bits.test:1000", "between"),
    ("bits.test:", "not a score"),
    ("bits.test/0", "never matches"),
    ("bits.test/0x1ffffffff", "1 to 32 bits"),
    ("bits.test/-1", "1 to 32 bits"),
    ("val.test=127.0.0.2|", "empty value"),
    ("val.test=", "empty value"),
    ("val.test=|127.0.0.2", "empty value"),
    ("val.test=10.0.0.2", "never counts"),
    ("val.test=127.0.0.1", "never counts"),
    ("", "empty entry"),
    ("   ", "empty entry"),
    ("bad..test", "zone name"),
    ("-bad.test", "zone name"),
    ("bad.test/0x2/0x4", "bitmask"),
])
def test_bad_zone_entries_are_refused(entry, says):
    with pytest.raises(uribl.ZoneError, match=says):
        uribl.parse_zone(entry)


def test_good_zone_entries_still_parse():
    assert uribl.parse_zone("Multi.Surbl.Org.:-1.5").score == -1.5
    assert uribl.parse_zone("bits.test/0xffffffff").mask == 0xFFFFFFFF
    assert uribl.parse_zone("val.test=127.0.0.2|127.0.0.3").values == {
        "127.0.0.2", "127.0.0.3"}
    # A mask over the last octet reads the answer as a 32-bit number.
    wide = uribl.parse_zone("bits.test/0x00010000")
    assert wide.counts("127.1.0.2") and not wide.counts("127.0.0.2")
    assert uribl.parse_zone("bits.test/0x04").counts("127.0.0.4")


@pytest.mark.parametrize("value", [["bits.test/0x02:nan"], [""], ["a.test", " "],
                                   "a.test,,b.test", "a.test,"])
def test_config_loading_stops_on_a_bad_or_empty_zone(tmp_path, value):
    with pytest.raises(config.ConfigError, match="uribl_zones"):
        settings_with(tmp_path, uribl_zones=value)


def test_config_accepts_no_zones(tmp_path):
    assert settings_with(tmp_path, uribl_zones=[]).uribl_zones == ()
    assert settings_with(tmp_path, uribl_zones="").uribl_zones == ()
    assert settings_with(tmp_path, uribl_zones="a.test, b.test").uribl_zones == (
        "a.test", "b.test")


# endregion

# region the Why band and the page caps


@pytest.mark.parametrize("probability,label", [
    (0.95, "(spam: at or above bayes_unsure_high 0.9)"),
    (0.85, "(unsure: between bayes_unsure_low 0.2 and"),
    (0.5, "(unsure: between"),
    (0.1, "(ham: at or below bayes_unsure_low 0.2)"),
])
def test_why_labels_the_probability_by_the_band(tmp_path, probability, label):
    application = build(tmp_path)
    try:
        qid = seed(spool_of(application))
        tracking.filtered(qid, "clean", 1.0, bayes_probability=probability,
                          spam_clues={"bayes": [], "uri": [], "note": ""})
        tracking.flush()
        admin = application.test_client()
        login(admin)
        page = admin.get(f"/tracking/{qid}").text
        assert label in " ".join(page.split())
        assert "leaning" not in page
    finally:
        tracking.flush()


def test_why_follows_a_configured_band(tmp_path):
    application = build(tmp_path)
    try:
        store = application.extensions["portcullis"]
        store["settings"] = store["settings"].replace(bayes_unsure_low=0.4,
                                                      bayes_unsure_high=0.8)
        qid = seed(spool_of(application))
        tracking.filtered(qid, "clean", 1.0, bayes_probability=0.85,
                          spam_clues={"bayes": [], "uri": [], "note": ""})
        tracking.flush()
        admin = application.test_client()
        login(admin)
        page = " ".join(admin.get(f"/tracking/{qid}").text.split())
        assert "(spam: at or above bayes_unsure_high 0.8)" in page
    finally:
        tracking.flush()


def test_track_and_api_say_the_page_cap(tmp_path):
    from core import stats, users

    application = build(tmp_path)
    try:
        now = utcnow()
        rows = [{"qid": f"CAP{i:05d}", "message_id": "", "sender": "a@example.net",
                 "subject": "s", "size": 1, "client_ip": "192.0.2.1", "helo": "h",
                 "direction": "in", "virus": "", "verdict": "clean",
                 "status": "delivered", "detail": "", "received_at": now}
                for i in range(stats.MAX_PAGE_SIZE + 3)]
        Message.insert_many(rows).execute()
        conf = tmp_path / "portcullis.conf"

        listed = run("track", "--limit", "5000", conf=conf)
        assert listed.returncode == 0, listed.stderr
        assert ("(500 of 503 shown; at most 500 at a time, narrow with "
                "--since/--until)") in listed.stdout
        small = run("track", "--limit", "10", conf=conf)
        assert "(10 of 503 shown; use --limit for more (at most 500)" in small.stdout
        data = json.loads(run("track", "--limit", "5000", "--json",
                              conf=conf).stdout)
        assert data["limit"] == 500 and len(data["messages"]) == 500

        token = users.create_token("admin", "tests")
        page = application.test_client().get(
            "/api/v1/messages?per_page=1000",
            headers={"Authorization": f"Bearer {token}"}).get_json()
        assert page["per_page"] == 500 and len(page["messages"]) == 500
        assert page["total"] == 503
    finally:
        tracking.flush()


# endregion
