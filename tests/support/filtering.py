"""One message through a real filter worker of a test app, the Bayes CLI
run the way an admin runs it, and a Bayes store of its own (the ``conf``
and ``settings`` fixtures, imported by the test modules that use them):
helpers shared by the spam tests."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from core import config, db, pipeline, tracking
from core.spool import Envelope, new_qid

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def filter_one(app, data: bytes, **overrides) -> str:
    """Filter ``data`` with the app's settings changed by ``overrides``
    (virus scanning off); returns its queue id once tracked."""
    base = app.extensions["portcullis"]["settings"]
    settings = base.replace(**{"virus_scan": False, "bayes_enabled": True,
                               **overrides})
    worker = pipeline.FilterWorker(settings)
    env = Envelope(qid=new_qid(), sender="win@example.org",
                   recipients=["bob@example.com"], size=len(data))
    worker.spool.store_new(env, data)
    assert worker.run_once() == 1
    tracking.flush()
    return env.qid


def bayes_cli(conf, *args, timeout: float = 120):
    """``portcullis --config CONF bayes ARGS`` with no PORTCULLIS_ variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PORTCULLIS_")}
    return subprocess.run([sys.executable, "-m", "core.cli", "--config", str(conf),
                           "bayes", *args], cwd=REPO, env=clean,
                          capture_output=True, text=True, timeout=timeout)


def bayes_conf(tmp_path):
    """A config file for a Bayes store of its own under ``tmp_path``."""
    path = tmp_path / "portcullis.conf"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\nbayes_min_learned = 2\n'
                    "bayes_autolearn = false\nbayes_reload_seconds = 0\n")
    return path


@pytest.fixture
def conf(tmp_path):
    """A config file for a Bayes store of its own (``bayes_conf``)."""
    return bayes_conf(tmp_path)


@pytest.fixture
def settings(conf):
    """The settings of ``conf``, its database made and migrated."""
    settings = config.load(conf, environ={})
    (conf.parent / "data").mkdir()
    database = db.open_database(settings.database_url)
    db.migrate(database)
    yield settings
    database.close()
