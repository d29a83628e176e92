"""A quarantined message whose filter worker died before its rows were
written: the file is there, no page lists it, until it is adopted."""

from __future__ import annotations

import os
import time

from core import pipeline, quarantine, tracking
from core.models import Message, QuarantineItem
from core.spool import Envelope, new_qid
from tests.test_web import build, login, spool_of


def orphan(spool, verdict="spam", score=7.2, age=60.0, tracked=True) -> str:
    """A quarantine file as a killed worker leaves it: no item row."""
    env = Envelope(qid=new_qid(), sender="eve@example.net",
                   recipients=["bob@example.com"], size=99)
    if tracked:  # the SMTP process recorded it at 250
        tracking.received(env, message_id="<o@example.net>", subject="Win")
        tracking.flush()
    env.verdict, env.score = verdict, score
    path = spool.store_quarantine(env, b"Subject: Win\r\n\r\nbody\r\n")
    old = time.time() - age
    os.utime(path, (old, old))
    return env.qid


def test_a_quarantine_file_without_its_rows_is_adopted(tmp_path):
    app = build(tmp_path)
    spool = spool_of(app)
    lost = orphan(spool)
    virus = orphan(spool, verdict="virus", tracked=False)
    young = orphan(spool, age=0.0)
    assert quarantine.list_items().total == 0

    assert quarantine.adopt_orphans(spool) == 2
    items = {item.message.qid: item for item in quarantine.list_items().items}
    assert set(items) == {lost, virus}
    assert items[lost].kind == "spam" and items[virus].kind == "virus"
    assert "recorded late" in items[lost].reason
    row = Message.get(Message.qid == lost)
    assert row.status == "quarantined" and row.verdict == "spam"
    assert row.score == 7.2 and row.filtered_at is not None

    # Adopted once; the young one is left to its own (live) worker, and a
    # slow worker's own rows arriving after the adoption add no second item.
    assert quarantine.adopt_orphans(spool) == 0
    tracking.quarantined(lost, "spam", "spam score 7.2 >= 6.0")
    tracking.flush()
    assert QuarantineItem.select().count() == 2
    assert not QuarantineItem.select().join(Message).where(
        Message.qid == young).exists()

    # The admin sees it and can act on it.
    admin = app.test_client()
    login(admin)
    page = admin.get("/quarantine")
    assert page.status_code == 200 and lost in page.text
    tracking.flush()


def test_worker_zero_adopts_at_start_then_once_a_minute(tmp_path):
    app = build(tmp_path)
    spool = spool_of(app)
    now = [1000.0]
    chore = pipeline.QuarantineOrphans(spool, every=60.0, clock=lambda: now[0])
    orphan(spool)
    assert chore.tick() == 1
    orphan(spool)
    now[0] += 30
    assert chore.tick() is None  # not due
    now[0] += 31
    assert chore.tick() == 1
    tracking.flush()
