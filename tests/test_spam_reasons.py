"""Why a message was caught: Bayes probability, clues and URI blocklist hits
from a real filter worker (trained Bayes store, loopback DNS zone) to the
tracking record, the X-Spam-Status header, the web pages, the API and the
``portcullis`` command; and migration 0007 on a database made by 0006.
"""

from __future__ import annotations

import json

import pytest

from core import db, tracking
from core.models import BayesToken, Message, QuarantineItem
from core.spool import Envelope, new_qid
from tests.support.filtering import filter_one
from tests.test_cli import run
from tests.test_web import build, login, seed, spool_of

ZONE = "reasons.uribl.test"
HAM_WORDS = "meeting agenda minutes project budget review"
SPAM_WORDS = "cheap pills casino winner jackpot bonus"
SPAMMY = (b"From: Prize Desk <win@example.org>\r\nTo: <bob@example.com>\r\n"
          b"Subject: casino jackpot winner\r\nMessage-ID: <win-1@example.org>\r\n"
          b"\r\ncheap pills casino winner jackpot bonus at "
          b"http://promo.example.net/claim now\r\n")


def _train(settings, tmp_path):
    from core import spam

    for kind, words in (("ham", HAM_WORDS), ("spam", SPAM_WORDS)):
        folder = tmp_path / kind
        folder.mkdir()
        for number in range(6):
            (folder / f"{number}.eml").write_bytes(
                f"From: someone{number}@example.net\r\nSubject: {words} {number}"
                f"\r\n\r\n{words} {words} number {number}\r\n".encode())
    spam.train([tmp_path / "ham"], [tmp_path / "spam"], progress=False,
               settings=settings)


@pytest.fixture
def app(tmp_path, dns_zone):
    from core.spam import uribl

    uribl.CACHE.clear()
    dns_zone(f"example.net.{ZONE}. A 127.0.0.2")
    application = build(tmp_path)
    yield application
    tracking.flush()
    uribl.CACHE.clear()


def _filter(app, quarantine_level: float, data: bytes = SPAMMY) -> str:
    """One message through a real filter worker; returns its queue id."""
    return filter_one(app, data, bayes_min_learned=2,
                      uribl_zones=(f"{ZONE}:2.5",),
                      spam_quarantine_level=quarantine_level)


@pytest.fixture
def trained(app, tmp_path):
    _train(app.extensions["portcullis"]["settings"], tmp_path)
    return app


def test_pipeline_records_probability_clues_and_uri_hits(trained):
    qid = _filter(trained, quarantine_level=100.0)

    row = Message.get(Message.qid == qid)
    assert row.bayes_probability is not None and row.bayes_probability > 0.9
    clues = tracking.read_clues(row.spam_clues)
    tokens = [token for token, _ in clues["bayes"]]
    assert 0 < len(tokens) <= tracking.MAX_CLUES
    assert any("casino" in t or "jackpot" in t for t in tokens), tokens
    assert all(0.0 <= f <= 1.0 for _, f in clues["bayes"])
    assert clues["uri"] == [{"zone": ZONE, "domain": "example.net",
                             "answer": "127.0.0.2", "score": 2.5,
                             "test": "URIBL_REASONS"}]
    assert clues["note"] == "" and clues["uri_note"] == ""

    _env, out = spool_of(trained).read("deliver", qid)
    status = next(line for line in out.split(b"\r\n")
                  if line.startswith(b"X-Spam-Status:"))
    assert b"URIBL_REASONS" in status and b"BAYES_" in status


def test_untrained_filter_records_its_note_and_the_uri_hit(app):
    qid = _filter(app, quarantine_level=100.0)

    row = Message.get(Message.qid == qid)
    assert row.bayes_probability is None
    clues = tracking.read_clues(row.spam_clues)
    assert "not trained enough" in clues["note"] and clues["bayes"] == []
    assert clues["uri"][0]["test"] == "URIBL_REASONS"
    _env, out = spool_of(app).read("deliver", qid)
    assert b"tests=URIBL_REASONS" in out

    admin = app.test_client()
    login(admin)
    page = admin.get(f"/tracking/{qid}").text
    assert "Bayes not trained enough" in page and ZONE in page


def test_a_failing_filter_says_so_and_the_mail_flows(trained):
    # A store broken behind the filter's back (a negative count, which
    # restore refuses): loading it fails in the worker.
    BayesToken.update(ham=-5).where(
        BayesToken.token == BayesToken.select(BayesToken.token).limit(1)).execute()
    qid = _filter(trained, quarantine_level=100.0)

    row = Message.get(Message.qid == qid)
    assert row.bayes_probability is None
    note = tracking.read_clues(row.spam_clues)["note"]
    assert "the spam filter failed (OverflowError)" in note
    assert "event=spam_error" in note
    assert spool_of(trained).read("deliver", qid)


def test_web_pages_and_api_show_why(trained):
    from core import users

    relayed = _filter(trained, quarantine_level=100.0)
    held = _filter(trained, quarantine_level=2.0)
    item = QuarantineItem.get()
    assert item.message.qid == held

    admin = trained.test_client()
    login(admin)
    page = admin.get(f"/tracking/{relayed}").text
    assert "<h2>Why</h2>" in page and 'id="clues"' in page
    row = Message.get(Message.qid == relayed)
    assert f"{row.bayes_probability:.4f}" in page
    assert "URIBL_REASONS" in page and ZONE in page
    assert 'class="tag v-spam">spam<' in page

    page = admin.get(f"/quarantine/{item.id}").text
    assert "<h2>Why</h2>" in page and "URIBL_REASONS" in page
    assert 'id="clues"' in page

    token = users.create_token("admin", "tests")
    headers = {"Authorization": f"Bearer {token}"}
    api = trained.test_client()
    data = api.get(f"/api/v1/messages/{relayed}", headers=headers).get_json()
    assert data["bayes_probability"] == pytest.approx(row.bayes_probability)
    assert data["spam_clues"]["uri"][0]["domain"] == "example.net"
    assert data["spam_clues"]["bayes"] == tracking.read_clues(row.spam_clues)["bayes"]
    data = api.get(f"/api/v1/quarantine/{item.id}", headers=headers).get_json()
    assert data["bayes_probability"] > 0.9
    assert data["spam_clues"]["uri"][0]["test"] == "URIBL_REASONS"


def test_attacker_tokens_are_escaped_and_bounded(app):
    qid = seed(spool_of(app), verdict="spam")
    long_token = "<script>alert(1)</script>" + "x" * 200
    tracking.filtered(qid, "spam", 7.5, bayes_probability=0.97, spam_clues={
        "bayes": [[long_token, 0.99]] + [[f"t{i}", 0.1] for i in range(30)],
        "uri": [{"zone": "z.test", "domain": "<b>bold</b>.example",
                 "answer": "127.0.0.2", "score": 1.0, "test": "URIBL_Z"}] * 40,
        "note": ""})
    tracking.flush()

    clues = tracking.read_clues(Message.get(Message.qid == qid).spam_clues)
    assert len(clues["bayes"]) == tracking.MAX_CLUES
    assert len(clues["bayes"][0][0]) == tracking.MAX_TOKEN
    assert len(clues["uri"]) == tracking.MAX_URI_HITS

    admin = app.test_client()
    login(admin)
    page = admin.get(f"/tracking/{qid}").text
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)" in page
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold" in page
    assert 'class="tag v-clean">ham<' in page


def test_old_rows_and_bad_json_still_display(app):
    qid = seed(spool_of(app))
    assert Message.get(Message.qid == qid).spam_clues == ""
    assert tracking.read_clues("") == {"bayes": [], "uri": [], "note": "",
                                       "uri_note": ""}
    for junk in ("{not json", "[1, 2]", '{"bayes": 5, "uri": "x"}',
                 '{"bayes": [["a"], ["b", "NaN"], ["c", 0.5]]}', "[" * 100000):
        assert tracking.read_clues(junk)["uri"] == []
    assert tracking.read_clues('{"bayes": [["a"], ["c", 0.5]]}')["bayes"] == [
        ["c", 0.5]]

    admin = app.test_client()
    login(admin)
    page = admin.get(f"/tracking/{qid}")
    assert page.status_code == 200 and "nothing recorded" in page.text

    # Received but held before filtering (clamd down, say): not "nothing".
    waiting = new_qid()
    tracking.received(Envelope(qid=waiting, sender="a@example.net",
                               recipients=["b@example.com"]), "<w@x>", "held")
    tracking.deferred(waiting, "virus scanner unavailable")
    tracking.flush()
    page = admin.get(f"/tracking/{waiting}")
    assert page.status_code == 200 and "not filtered yet" in page.text


# region command line


def test_track_shows_why_for_one_message(trained, tmp_path):
    qid = _filter(trained, quarantine_level=100.0)
    seed(spool_of(trained))
    conf = tmp_path / "portcullis.conf"

    shown = run("track", "--qid", qid, conf=conf)
    assert shown.returncode == 0, shown.stderr
    assert "Bayes probability: " in shown.stdout
    assert "(spam: at or above bayes_unsure_high 0.9)" in shown.stdout
    assert "Clues that weighed most" in shown.stdout
    assert f"URIBL_REASONS  example.net in {ZONE}" in shown.stdout

    listed = run("track", conf=conf)
    assert listed.returncode == 0 and "Bayes probability" not in listed.stdout

    data = json.loads(run("track", "--qid", qid, "--json", conf=conf).stdout)
    message = data["messages"][0]
    assert message["bayes_probability"] > 0.9
    assert message["spam_clues"]["uri"][0]["test"] == "URIBL_REASONS"
    assert message["spam_clues"]["bayes"]


def test_quarantine_learn_from_the_command_line(app, tmp_path):
    from core import quarantine

    stats = quarantine.bayes_function("stats")
    seed(spool_of(app), verdict="spam", quarantine="spam")
    item = QuarantineItem.get()
    conf = tmp_path / "portcullis.conf"
    before = stats()["spam_messages"]

    learned = run("quarantine", "learn", str(item.id), "--spam", conf=conf)
    assert learned.returncode == 0, learned.stderr
    assert "learned as spam" in learned.stdout
    assert stats()["spam_messages"] == before + 1
    again = run("quarantine", "learn", str(item.id), "--spam", conf=conf)
    assert again.returncode == 0 and "already learned as spam" in again.stdout

    unknown = run("quarantine", "learn", "999", "--ham", conf=conf)
    assert unknown.returncode == 2
    assert "there is no quarantine item 999" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    missing = run("quarantine", "learn", str(item.id), conf=conf)
    assert missing.returncode == 2 and "--spam" in missing.stderr
    assert "--ham" in missing.stderr
    both = run("quarantine", "learn", str(item.id), "--spam", "--ham", conf=conf)
    assert both.returncode == 2 and "not allowed with" in both.stderr
    word = run("quarantine", "learn", "abc", "--ham", conf=conf)
    assert word.returncode == 2 and "is not a number" in word.stderr


# endregion

# region migration


def test_migration_0007_upgrades_a_0006_database_with_rows(tmp_path):
    database = db.open_database(f"sqlite:///{tmp_path / 'old.db'}")
    db.migrate(database, upto="0006_bayes_ngram")
    assert db.pending(database) == ["0007_spam_reasons"]
    database.execute_sql(
        "INSERT INTO message (qid, message_id, sender, subject, size, client_ip,"
        " helo, direction, score, virus, verdict, status, detail, received_at)"
        " VALUES ('AAAA1', '', 'a@example.net', 'old', 10, '192.0.2.1', 'h',"
        " 'in', 7.0, '', 'spam', 'quarantined', '', '2026-01-01 00:00:00')")

    assert db.migrate(database) == ["0007_spam_reasons"]

    old = Message.get(Message.qid == "AAAA1")
    assert (old.subject, old.score) == ("old", 7.0)
    assert old.bayes_probability is None and old.spam_clues == ""
    assert tracking.read_clues(old.spam_clues)["bayes"] == []
    tracking.filtered("AAAA1", "spam", 7.0, bayes_probability=0.5,
                      spam_clues={"bayes": [["tok", 0.75]], "uri": [], "note": ""})
    tracking.flush()
    fresh = Message.get(Message.qid == "AAAA1")
    assert fresh.bayes_probability == 0.5
    assert tracking.read_clues(fresh.spam_clues)["bayes"] == [["tok", 0.75]]
    database.close()


# endregion

