"""Web admin pages through Flask's test client, a fresh database per test.

The helpers here (``build``, ``seed``, ``login``, ``csrf_of``) are shared by
the other tests/test_web_*.py, test_access_audit.py and test_browser.py.
"""

from __future__ import annotations

import datetime as dt
import logging
import re

import pytest

from app import create_app
from core import config, db, tracking, users
from core.models import AdminUser, Message, QuarantineItem
from core.spool import Envelope, Spool, new_qid

PASSWORD = "a long test password"


def build(tmp_path, **test_config):
    """Settings, a migrated database with user 'admin', and the app."""
    data_dir = tmp_path / "data"
    conf = tmp_path / "portcullis.conf"
    conf.write_text(f'data_dir = "{data_dir}"\nweb_listen = "127.0.0.1:8025"\n')
    settings = config.load(conf, environ={})
    database = db.open_database(settings.database_url)
    db.migrate(database)
    users.create_user("admin", PASSWORD)
    options = {"TESTING": True, "LOGIN_FAIL_DELAY": 0, **test_config}
    return create_app(settings, options)


def seed(spool: Spool, subject="Quarterly report", sender="alice@example.net",
         rcpts=("bob@example.com",), verdict="clean", status="delivered",
         client_ip="192.0.2.10", quarantine=None, reason="", data=None,
         reply="250 2.0.0 Ok: queued as 77"):
    """One tracked message, through the real tracking writer and spool."""
    qid = new_qid()
    env = Envelope(qid=qid, sender=sender, recipients=list(rcpts),
                   client_ip=client_ip, helo="mail.example.net", size=321)
    tracking.received(env, message_id=f"<{qid}@example.net>", subject=subject)
    tracking.filtered(qid, verdict, 7.5 if verdict == "spam" else 0.5,
                      virus="Eicar-Test-Signature" if verdict == "virus" else "")
    if quarantine:
        body = data or (f"From: {sender}\r\nTo: {rcpts[0]}\r\nSubject: {subject}\r\n"
                        "\r\nHello there.\r\n").encode()
        spool.store_quarantine(env, body)
        tracking.quarantined(qid, quarantine, reason or f"{quarantine} found")
    else:
        tracking.status(qid, status, done=status in ("delivered", "bounced"))
        for rcpt in rcpts:
            tracking.recipient_status(qid, rcpt, status, reply=reply, attempts=1)
    tracking.flush()
    return qid


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "page has no CSRF field"
    return match.group(1)


def login(client, username="admin", password=PASSWORD):
    page = client.get("/login")
    return client.post("/login", data={"username": username, "password": password,
                                       "csrf_token": csrf_of(page.text)})


def spool_of(app) -> Spool:
    return app.extensions["portcullis"]["spool"]


@pytest.fixture
def app(tmp_path):
    application = build(tmp_path)
    yield application
    tracking.flush()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def admin(client):
    """A client with a logged-in session."""
    assert login(client).status_code == 302
    return client


# region login, logout, sessions


def test_login_then_dashboard_then_logout(client):
    assert client.get("/").status_code == 302

    response = login(client)
    assert response.status_code == 302
    assert response.location == "/"
    page = client.get("/")
    assert page.status_code == 200
    assert "Today" in page.text

    response = client.post("/logout", data={"csrf_token": csrf_of(page.text)})
    assert response.status_code == 302
    assert client.get("/").status_code == 302


def test_wrong_password_is_refused_and_logged_without_it(client, caplog):
    caplog.set_level(logging.INFO, logger="app")
    response = login(client, password="not the password")

    assert response.status_code == 401
    assert "Wrong user name or password" in response.text
    assert client.get("/").status_code == 302
    lines = [r.getMessage() for r in caplog.records if "event=login" in r.getMessage()]
    assert lines == ["event=login user=admin ip=127.0.0.1 result=fail "
                     "reason=bad_credentials"]
    assert "not the password" not in caplog.text


def test_unknown_user_gets_the_same_answer(client):
    response = login(client, username="mallory")
    assert response.status_code == 401
    assert "Wrong user name or password" in response.text


def test_login_without_csrf_token_is_refused(client):
    client.get("/login")
    response = client.post("/login", data={"username": "admin", "password": PASSWORD})
    assert response.status_code == 400
    assert client.get("/").status_code == 302


def test_repeated_failures_lock_the_address_out(tmp_path):
    app = build(tmp_path, LOGIN_MAX_FAILURES=3)
    client = app.test_client()
    for _ in range(3):
        assert login(client, password="guess guess guess").status_code == 401

    response = login(client)  # even the right password, while locked out
    assert response.status_code == 429
    assert "Too many failed logins" in response.text


@pytest.mark.parametrize("target, expected", [
    ("//evil.example/", "/"),
    ("/\\evil.example/", "/"),
    ("https://evil.example/", "/"),
    ("/tracking?sender=x", "/tracking?sender=x"),
])
def test_login_redirects_only_to_local_paths(client, target, expected):
    page = client.get("/login")
    response = client.post("/login", data={
        "username": "admin", "password": PASSWORD,
        "csrf_token": csrf_of(page.text), "next": target})
    assert response.location == expected


def test_new_password_ends_old_sessions(admin):
    assert admin.get("/").status_code == 200
    users.set_password("admin", "another long password")
    assert admin.get("/").status_code == 302


def test_session_is_renewed_at_login(client):
    page = client.get("/login")
    before = csrf_of(page.text)
    login(client)
    after = csrf_of(client.get("/").text)
    assert before != after


def test_passwords_are_stored_hashed(app):
    stored = AdminUser.get(AdminUser.username == "admin").password_hash
    assert PASSWORD not in stored
    assert stored.startswith("scrypt:")


def test_secret_key_file_is_private(app, tmp_path):
    key_file = tmp_path / "data" / "secret_key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert app.secret_key == key_file.read_text().strip()


def test_pages_carry_security_headers(admin):
    response = admin.get("/")
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"


# endregion

# region dashboard and tracking


def test_dashboard_counts_todays_mail(admin, app):
    spool = spool_of(app)
    seed(spool)
    seed(spool, status="deferred")
    seed(spool, verdict="spam", quarantine="spam")
    seed(spool, verdict="virus", quarantine="virus")

    page = admin.get("/").text
    assert re.search(r'id="count-received".*?<span class="number">4<', page, re.S)
    assert re.search(r'id="count-delivered".*?<span class="number">1<', page, re.S)
    assert re.search(r'id="count-quarantined".*?<span class="number">2<', page, re.S)
    assert re.search(r'id="count-deferred".*?<span class="number">1<', page, re.S)
    assert re.search(r'id="count-virus".*?<span class="number">1<', page, re.S)


@pytest.mark.parametrize("query, expected", [
    ({"sender": "carol@"}, {"carol"}),
    ({"rcpt": "dave@example.com"}, {"dave"}),
    ({"subject": "invoice"}, {"carol"}),
    ({"client_ip": "198.51.100."}, {"dave"}),
    ({"verdict": "spam"}, {"erin"}),
    ({"status": "bounced"}, {"dave"}),
    ({"since": "1h"}, {"carol", "dave", "erin"}),
    ({"until": "2000-01-01"}, set()),
])
def test_tracking_search(admin, app, query, expected):
    spool = spool_of(app)
    seed(spool, sender="carol@example.net", subject="Your invoice 4411")
    seed(spool, sender="dave@example.org", rcpts=("dave@example.com",),
         status="bounced", client_ip="198.51.100.7")
    seed(spool, sender="erin@example.org", verdict="spam", quarantine="spam")

    page = admin.get("/tracking", query_string=query)
    assert page.status_code == 200
    names = ("carol", "dave", "erin")
    found = {name for name in names if f"{name}@example" in page.text}
    assert found == expected


def test_tracking_search_by_queue_id_prefix(admin, app):
    qid = seed(spool_of(app))
    other = seed(spool_of(app), sender="zed@example.net")
    page = admin.get("/tracking", query_string={"qid": qid[:-1].lower()}).text
    assert qid in page
    if other[:-1] != qid[:-1]:
        assert other not in page


def test_tracking_bad_date_says_what_to_type(admin):
    page = admin.get("/tracking", query_string={"since": "last tuesday"})
    assert page.status_code == 400
    assert "is not a date: use 2026-01-31" in page.text


def test_tracking_pages(tmp_path):
    app = build(tmp_path, PAGE_SIZE=2)
    client = app.test_client()
    login(client)
    for number in range(5):
        seed(spool_of(app), subject=f"numbered {number}")

    first = client.get("/tracking").text
    assert "5 messages" in first and "Page 1 of 3" in first
    third = client.get("/tracking", query_string={"page": 3}).text
    assert "numbered 0" in third and "numbered 4" not in third


def test_tracking_detail_shows_each_recipient_and_reply(admin, app):
    qid = seed(spool_of(app), rcpts=("bob@example.com", "eve@example.com"),
               status="deferred", reply="451 4.3.0 try later (greylisted)")
    page = admin.get(f"/tracking/{qid}")
    assert page.status_code == 200
    assert "bob@example.com" in page.text and "eve@example.com" in page.text
    assert page.text.count("451 4.3.0 try later (greylisted)") == 2
    assert "192.0.2.10" in page.text


def test_tracking_detail_of_unknown_qid_is_404(admin):
    page = admin.get("/tracking/0000000000000000")
    assert page.status_code == 404
    assert "No message with queue id" in page.text


def test_attacker_text_is_escaped_and_bidi_made_visible(admin, app):
    subject = 'Invoice \u202egpj.exe <script>alert("x")</script>'
    qid = seed(spool_of(app), subject=subject, sender="\u2066x@example.net")

    for path in ("/tracking", f"/tracking/{qid}"):
        page = admin.get(path).text
        assert "\u202e" not in page and "\u2066" not in page
        assert "&lt;U+202E&gt;gpj.exe" in page
        assert "<script>" not in page
        assert "&lt;script&gt;" in page


# endregion

# region quarantine


def test_quarantine_lists_by_kind(admin, app):
    spool = spool_of(app)
    seed(spool, subject="cheap pills", verdict="spam", quarantine="spam")
    seed(spool, subject="invoice.zip", verdict="virus", quarantine="virus")

    spam = admin.get("/quarantine", query_string={"kind": "spam"}).text
    assert "cheap pills" in spam and "invoice.zip" not in spam
    everything = admin.get("/quarantine").text
    assert "cheap pills" in everything and "invoice.zip" in everything
    bad = admin.get("/quarantine", query_string={"kind": "ham"})
    assert bad.status_code == 302


def test_quarantined_html_is_shown_as_text_never_rendered(admin, app):
    data = (b"From: x@example.net\r\nSubject: =?utf-8?q?Pr=C3=BCfung?=\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; b=\"B\"\r\n"
            b"\r\n--B\r\nContent-Type: text/plain\r\n\r\nplain words\r\n"
            b"--B\r\nContent-Type: text/html\r\n\r\n"
            b"<img src=\"http://tracker.example/p.gif\"><script>bad()</script>\r\n"
            b"--B--\r\n").replace(b'b="B"', b'boundary="B"')
    seed(spool_of(app), verdict="spam", quarantine="spam", data=data)
    item = QuarantineItem.get()

    page = admin.get(f"/quarantine/{item.id}").text
    assert "plain words" in page
    assert "Prüfung" in page
    assert "<img" not in page and "<script>bad" not in page
    assert "&lt;img src=" in page


@pytest.mark.parametrize("data", [
    b"",
    b"no header block at all",
    b"Subject: x\r\nContent-Type: text/plain; charset=x-unknown\r\n\r\n\xff\xfe",
    b"Subject: " + b"A" * 100_000 + b"\r\n\r\n" + b"x" * 200_000,
    b"Content-Type: multipart/mixed; boundary=Z\r\n\r\n"
    + b"--Z\r\nContent-Type: multipart/mixed; boundary=Z\r\n\r\n" * 3000,
], ids=["empty", "no-headers", "bad-charset", "huge", "deep"])
def test_hostile_messages_still_show(admin, app, data):
    seed(spool_of(app), verdict="spam", quarantine="spam", data=data)
    item = QuarantineItem.get()
    page = admin.get(f"/quarantine/{item.id}")
    assert page.status_code == 200
    assert len(page.text) < 400_000


def test_release_puts_the_message_into_the_delivery_queue(admin, app):
    spool = spool_of(app)
    qid = seed(spool, verdict="spam", quarantine="spam",
               rcpts=("bob@example.com", "eve@example.com"))
    item = QuarantineItem.get()
    token = csrf_of(admin.get("/quarantine").text)

    response = admin.post(f"/quarantine/{item.id}/release",
                          data={"csrf_token": token}, follow_redirects=True)
    assert f"Released {qid}" in response.text

    assert spool.list("deliver") == [qid]
    assert not (spool.quarantine_dir / qid).exists()
    env, data = spool.read("deliver", qid)
    assert b"Hello there." in data
    assert {r: s.status for r, s in env.rcpt_state.items()} == {
        "bob@example.com": "queued", "eve@example.com": "queued"}
    item = QuarantineItem.get_by_id(item.id)
    assert item.state == "released" and item.handled_by == "admin"
    msg = Message.get(Message.qid == qid)
    assert msg.status == "queued"
    assert {r.status for r in msg.recipients} == {"queued"}


def test_second_release_is_refused(admin, app):
    qid = seed(spool_of(app), verdict="spam", quarantine="spam")
    item = QuarantineItem.get()
    token = csrf_of(admin.get("/quarantine").text)
    admin.post(f"/quarantine/{item.id}/release", data={"csrf_token": token})

    response = admin.post(f"/quarantine/{item.id}/release",
                          data={"csrf_token": token}, follow_redirects=True)
    assert "was already released by admin" in response.text
    assert spool_of(app).list("deliver") == [qid]


def test_concurrent_releases_deliver_once(app):
    import threading

    from core import quarantine

    spool = spool_of(app)
    qid = seed(spool, verdict="spam", quarantine="spam")
    item_id = QuarantineItem.get().id
    barrier = threading.Barrier(4)
    outcomes = []

    def click(who):
        barrier.wait()
        try:
            quarantine.release(spool, item_id, who)
            outcomes.append("released")
        except quarantine.QuarantineError as exc:
            outcomes.append(exc.status)
        finally:
            from core import models

            models.db.close()

    threads = [threading.Thread(target=click, args=(f"admin{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert outcomes.count("released") == 1
    assert set(outcomes) - {"released"} <= {409, 410}
    assert spool.list("deliver") == [qid]


def test_delete_removes_the_file(admin, app):
    spool = spool_of(app)
    qid = seed(spool, verdict="virus", quarantine="virus")
    item = QuarantineItem.get()
    token = csrf_of(admin.get("/quarantine").text)

    response = admin.post(f"/quarantine/{item.id}/delete", data={"csrf_token": token},
                          follow_redirects=True)
    assert f"Deleted {qid}" in response.text
    assert not (spool.quarantine_dir / qid).exists()
    assert spool.list("deliver") == []
    assert QuarantineItem.get_by_id(item.id).state == "deleted"
    assert Message.get(Message.qid == qid).status == "deleted"


def test_release_without_csrf_token_changes_nothing(admin, app):
    spool = spool_of(app)
    qid = seed(spool, verdict="spam", quarantine="spam")
    item = QuarantineItem.get()

    response = admin.post(f"/quarantine/{item.id}/release")
    assert response.status_code == 400
    assert (spool.quarantine_dir / qid).exists()
    assert QuarantineItem.get_by_id(item.id).state == "held"


def test_released_items_are_listed_with_who_did_it(admin, app):
    seed(spool_of(app), subject="false positive", verdict="spam", quarantine="spam")
    item = QuarantineItem.get()
    token = csrf_of(admin.get("/quarantine").text)
    admin.post(f"/quarantine/{item.id}/release", data={"csrf_token": token})

    assert "false positive" not in admin.get("/quarantine").text
    released = admin.get("/quarantine", query_string={"state": "released"}).text
    assert "false positive" in released and "admin" in released


def test_not_spam_button_trains_the_bayes_filter(admin, app):
    from core import quarantine

    spam_stats = quarantine.bayes_function("stats")
    if spam_stats is None:
        pytest.skip("the Bayes filter (core/spam) is not installed")
    seed(spool_of(app), verdict="spam", quarantine="spam")
    item = QuarantineItem.get()
    page = admin.get("/quarantine").text
    assert "Not spam" in page
    before = spam_stats()["ham_messages"]

    response = admin.post(f"/quarantine/{item.id}/learn",
                          data={"csrf_token": csrf_of(page), "as": "ham"},
                          follow_redirects=True)
    assert "as not spam" in response.text
    assert spam_stats()["ham_messages"] == before + 1

    again = admin.post(f"/quarantine/{item.id}/learn",
                       data={"csrf_token": csrf_of(page), "as": "ham"},
                       follow_redirects=True)
    assert "already learned as not spam" in again.text
    for bad in ({"as": "banana"}, {}):
        refused = admin.post(f"/quarantine/{item.id}/learn",
                             data={"csrf_token": csrf_of(page), **bad})
        assert refused.status_code == 400 and "as=spam or as=ham" in refused.text
    assert spam_stats()["ham_messages"] == before + 1


# endregion


def test_created_today_counts_use_utc_midnight():
    from core import stats

    noon = dt.datetime(2026, 3, 1, 12, 30)
    assert stats.start_of_day(noon) == dt.datetime(2026, 3, 1)
