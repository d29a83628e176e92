"""The JSON API: token and session auth, CSRF for sessions, JSON errors."""

from __future__ import annotations

import pytest

from core import quarantine, users
from core.models import QuarantineItem
from tests.test_web import build, login, seed, spool_of


@pytest.fixture
def app(tmp_path):
    return build(tmp_path)


@pytest.fixture
def token(app):
    return users.create_token("admin", "tests")


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_without_credentials_the_answer_is_401_json(app):
    response = app.test_client().get("/api/v1/stats")
    assert response.status_code == 401
    assert response.is_json
    assert "Authorization: Bearer" in response.get_json()["error"]


def test_a_wrong_token_is_401(app):
    response = app.test_client().get("/api/v1/stats", headers=bearer("pct_nope"))
    assert response.status_code == 401


def test_token_search_and_detail(app, token):
    client = app.test_client()
    qid = seed(spool_of(app), sender="carol@example.net")
    seed(spool_of(app), sender="dave@example.net")

    found = client.get("/api/v1/messages", query_string={"sender": "carol"},
                       headers=bearer(token)).get_json()
    assert found["total"] == 1
    assert found["messages"][0]["qid"] == qid

    detail = client.get(f"/api/v1/messages/{qid}", headers=bearer(token)).get_json()
    assert detail["recipients"][0]["address"] == "bob@example.com"
    assert detail["recipients"][0]["status"] == "delivered"


def test_stats(app, token):
    seed(spool_of(app), verdict="spam", quarantine="spam")
    data = app.test_client().get("/api/v1/stats", headers=bearer(token)).get_json()
    assert data["today"]["received"] == 1
    assert data["held"]["spam"] == 1


def test_token_release_needs_no_csrf(app, token):
    spool = spool_of(app)
    qid = seed(spool, verdict="spam", quarantine="spam")
    item = QuarantineItem.get()

    response = app.test_client().post(f"/api/v1/quarantine/{item.id}/release",
                                      headers=bearer(token))
    assert response.status_code == 200
    assert response.get_json()["state"] == "released"
    assert spool.list("deliver") == [qid]

    again = app.test_client().post(f"/api/v1/quarantine/{item.id}/release",
                                   headers=bearer(token))
    assert again.status_code == 409
    assert "already released" in again.get_json()["error"]


def test_session_post_needs_the_csrf_header(app):
    client = app.test_client()
    login(client)
    seed(spool_of(app), verdict="virus", quarantine="virus")
    item = QuarantineItem.get()

    refused = client.post(f"/api/v1/quarantine/{item.id}/delete")
    assert refused.status_code == 400
    assert "X-CSRF-Token" in refused.get_json()["error"]

    csrf = client.get("/api/v1/session").get_json()["csrf_token"]
    done = client.post(f"/api/v1/quarantine/{item.id}/delete",
                       headers={"X-CSRF-Token": csrf})
    assert done.status_code == 200
    assert done.get_json()["state"] == "deleted"


def test_quarantine_item_shows_text_not_html(app, token):
    seed(spool_of(app), verdict="spam", quarantine="spam")
    item = QuarantineItem.get()
    data = app.test_client().get(f"/api/v1/quarantine/{item.id}",
                                 headers=bearer(token)).get_json()
    assert data["text"].strip() == "Hello there."
    assert data["recipients"] == ["bob@example.com"]
    assert ["Subject", "Quarterly report"] in data["headers"]


@pytest.mark.parametrize("path, status, words", [
    ("/api/v1/nothing-here", 404, "not found"),
    ("/api/v1/messages/0000000000000000", 404, "no message with queue id"),
    ("/api/v1/quarantine/999", 404, "no quarantine item 999"),
    ("/api/v1/quarantine?kind=ham", 400, "kind 'ham' is not one of"),
    ("/api/v1/messages?verdict=good", 400, "verdict 'good' is not one of"),
    ("/api/v1/messages?since=soon", 400, "is not a date"),
    ("/api/v1/messages?page=two", 400, "page must be a whole number"),
])
def test_errors_are_json_with_a_message(app, token, path, status, words):
    response = app.test_client().get(path, headers=bearer(token))
    assert response.status_code == status
    assert response.is_json
    assert words in response.get_json()["error"].lower()


def test_wrong_method_is_json_405(app, token):
    response = app.test_client().get("/api/v1/quarantine/1/release",
                                     headers=bearer(token))
    assert response.status_code == 405
    assert response.is_json


def test_learn_wants_spam_or_ham(app, token):
    seed(spool_of(app), verdict="spam", quarantine="spam")
    item = QuarantineItem.get()
    response = app.test_client().post(f"/api/v1/quarantine/{item.id}/learn",
                                      json={"as": "maybe"}, headers=bearer(token))
    assert response.status_code == 400
    assert '{"as": "spam"}' in response.get_json()["error"]


def test_learn_trains_the_bayes_filter(app, token):
    spam_stats = quarantine.bayes_function("stats")
    if spam_stats is None:
        pytest.skip("the Bayes filter (core/spam) is not installed")
    seed(spool_of(app), verdict="spam", quarantine="spam")
    item = QuarantineItem.get()
    before = spam_stats()["spam_messages"]

    response = app.test_client().post(f"/api/v1/quarantine/{item.id}/learn",
                                      json={"as": "spam"}, headers=bearer(token))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["learned"] is True
    assert spam_stats()["spam_messages"] == before + 1
    assert QuarantineItem.get_by_id(item.id).state == "held"
