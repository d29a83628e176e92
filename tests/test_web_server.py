"""The admin served for real: app.server.serve runs gunicorn on a free port."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from core import config, db, tracking, users
from core.spool import Spool
from tests.support.system import free_port
from tests.test_web import PASSWORD

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass
class Served:
    base: str
    spool: Spool
    process: subprocess.Popen
    log_path: object


@pytest.fixture
def server(tmp_path):
    """A migrated data dir with one admin and the admin under gunicorn."""
    port = free_port()
    conf = tmp_path / "portcullis.conf"
    conf.write_text(f'data_dir = "{tmp_path / "data"}"\n'
                    f'web_listen = "127.0.0.1:{port}"\nweb_workers = 1\n')
    settings = config.load(conf, environ={})
    db.migrate(db.open_database(settings.database_url))
    users.create_user("admin", PASSWORD)

    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCULLIS_")}
    code = ("import sys; from core import config; from app.server import serve; "
            "serve(config.load(sys.argv[1]))")
    log_path = tmp_path / "web.log"
    log_file = open(log_path, "wb")
    process = subprocess.Popen([sys.executable, "-c", code, str(conf)], cwd=REPO,
                               env=env, stdout=log_file, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(base + "/login", timeout=2).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait()
                log_file.close()
                raise RuntimeError("gunicorn did not start: "
                                   + log_path.read_text()[-2000:])
            time.sleep(0.1)
    try:
        yield Served(base, Spool(settings.data_dir), process, log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log_file.close()
        tracking.flush()


def test_gunicorn_serves_the_login_page(server):
    base = server.base
    with urllib.request.urlopen(base + "/login", timeout=5) as response:
        body = response.read().decode()
        assert response.status == 200
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert 'name="csrf_token"' in body

    with urllib.request.urlopen(base + "/static/style.css", timeout=5) as response:
        assert response.status == 200


def test_gunicorn_api_answers_401_json(server):
    base = server.base
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(base + "/api/v1/stats", timeout=5)
    assert caught.value.code == 401
    assert "error" in json.loads(caught.value.read())
    caught.value.close()


def test_gunicorn_stops_on_sigterm_and_logs_logins(server):
    page = urllib.request.urlopen(server.base + "/login", timeout=5)
    cookie = page.headers["Set-Cookie"].split(";")[0]
    token = page.read().decode().split('name="csrf_token" value="')[1].split('"')[0]
    form = urllib.parse.urlencode({"username": "admin", "password": "wrong one!!",
                                   "csrf_token": token}).encode()
    request = urllib.request.Request(server.base + "/login", data=form,
                                     headers={"Cookie": cookie})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 401
    caught.value.close()

    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=15) == 0
    log_text = server.log_path.read_text()
    assert "event=login user=admin ip=127.0.0.1 result=fail" in log_text
    assert "wrong one!!" not in log_text
