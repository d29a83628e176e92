"""A message released in the web admin really goes out: real delivery, real sink.

The delivery agent runs in its own process (core.delivery.serve) with the
recording sink as downstream; the release goes through the JSON API.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from core import config, db, tracking, users
from core.models import Message, QuarantineItem
from core.spool import Spool
from tests.support.sink import Sink
from tests.test_web import PASSWORD, seed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def sink(tmp_path):
    server = Sink(tmp_path / "sink").start()
    yield server
    server.stop()


@pytest.fixture
def setup(tmp_path, sink):
    conf = tmp_path / "portcullis.conf"
    conf.write_text(f'data_dir = "{tmp_path / "data"}"\n'
                    f'downstream = "{sink.address}"\n'
                    'relay_domains = ["example.com"]\n')
    settings = config.load(conf, environ={})
    db.migrate(db.open_database(settings.database_url))
    users.create_user("admin", PASSWORD)

    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCULLIS_")}
    code = ("import sys; from core import config; from core.delivery import serve; "
            "serve(config.load(sys.argv[1]))")
    log_file = open(tmp_path / "delivery.log", "wb")
    process = subprocess.Popen([sys.executable, "-c", code, str(conf)], cwd=REPO,
                               env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        yield settings
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log_file.close()
        tracking.flush()


def test_released_message_reaches_the_downstream(setup, sink):
    from app import create_app

    spool = Spool(setup.data_dir)
    qid = seed(spool, subject="Released for real", verdict="spam", quarantine="spam",
               rcpts=("bob@example.com", "eve@example.com"))
    app = create_app(setup, {"TESTING": True})
    token = users.create_token("admin")
    item = QuarantineItem.get()

    response = app.test_client().post(f"/api/v1/quarantine/{item.id}/release",
                                      headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.get_json()

    found = sink.wait_for(lambda tx: b"Subject: Released for real" in tx.data)
    assert len(found) == 1
    assert sorted(found[0].accepted) == ["bob@example.com", "eve@example.com"]
    assert b"Hello there." in found[0].data

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        msg = Message.get(Message.qid == qid)
        if msg.status == "delivered":
            break
        time.sleep(0.1)
    assert msg.status == "delivered"
    assert {r.status for r in msg.recipients} == {"delivered"}
    assert not (spool.quarantine_dir / qid).exists()
