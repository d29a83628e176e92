"""Filter workers and the decision: spool in, verdict out, against a real clamd."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest

from core import config, db, decision, headers, pipeline, tracking
from core.message import ParsedMessage
from core.models import Message, QuarantineItem
from core.spool import Envelope, Spool, new_qid
from tests.support import paths
from tests.support import paths
from tests.support.clamd import EICAR, clamd, clamd_running  # noqa: F401

GOLDEN = Path(__file__).parent / "golden" / "decision.txt"

CLEAN = (b"From: Alice <alice@example.net>\r\nTo: <user@example.com>\r\n"
         b"Subject: lunch\r\nMessage-ID: <lunch-1@example.net>\r\n"
         b"X-Spam-Flag: NO\r\nX-Spam-Status: No, score=-100.0 forged\r\n"
         b"\r\nSee you at noon.\r\n")


@dataclasses.dataclass
class Virus:
    infected: bool
    name: str = ""
    unscanned: str = ""


@dataclasses.dataclass
class Spam:
    score: float
    probability: float
    verdict: str = ""
    tokens: tuple = ()


# region decision (pure): golden file


def _contexts():
    env = Envelope(qid="0" * 17, sender="a@example.net", recipients=["u@example.com"])
    clean = ParsedMessage(subject="hi")
    broken = ParsedMessage(malformed=True, malformed_reason="nesting depth 1200 > 64")
    noted = dataclasses.replace(env, smtp_score=1.5, smtp_notes=["SPF_SOFTFAIL"])
    levels = {"tag_level": 3.0, "quarantine_level": 6.0}
    return [
        ("clean, no bayes", decision.Context(env, clean, Virus(False), **levels)),
        ("clean, bayes ham", decision.Context(env, clean, Virus(False),
                                              spam=Spam(0.4, 0.02), **levels)),
        ("tagged spam", decision.Context(env, clean, Virus(False),
                                         spam=Spam(4.2, 0.97), **levels)),
        ("spam plus smtp score", decision.Context(
            noted, clean, Virus(False), spam=Spam(4.6, 0.97), smtp_score=1.5,
            smtp_notes=("SPF_SOFTFAIL",), **levels)),
        ("virus", decision.Context(env, clean, Virus(True, "Eicar-Test-Signature"),
                                   spam=Spam(9.0, 1.0), **levels)),
        ("virus in malformed", decision.Context(env, broken, Virus(True, "Eicar"),
                                                **levels)),
        ("malformed", decision.Context(env, broken, Virus(False), **levels)),
        ("scanner down", decision.Context(env, clean, None,
                                          virus_error="connection refused",
                                          **levels)),
        ("scanner down, fail open", decision.Context(
            env, clean, None, virus_error="connection refused",
            virus_fail_open=True, **levels)),
        ("scan off", decision.Context(env, clean, None, **levels)),
        ("part over the scanner's limit", decision.Context(
            env, clean, Virus(False, unscanned="part 2 (30 MB)"), **levels)),
    ]


def _render() -> str:
    return "".join(f"# {name}\n{decision.decide(ctx).describe()}\n\n"
                   for name, ctx in _contexts())


def test_decisions_match_golden_file():
    rendered = _render()
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(rendered)
    assert rendered == GOLDEN.read_text()


def test_decide_is_pure():
    for _name, ctx in _contexts():
        assert decision.decide(ctx) == decision.decide(ctx)


def test_spam_headers_layout():
    found = dict(headers.spam_headers(7.25, 5.0, ["BAYES_99", "spf softfail"]))
    assert found["X-Spam-Flag"] == "YES"
    assert found["X-Spam-Score"] == "7.2"
    assert found["X-Spam-Level"] == "*******"
    assert found["X-Spam-Status"] == (
        "Yes, score=7.2 required=5.0 tests=BAYES_99,SPF_SOFTFAIL")
    low = dict(headers.spam_headers(-1.0, 5.0, []))
    assert low["X-Spam-Level"] == "" and low["X-Spam-Flag"] == "NO"
    assert low["X-Spam-Status"] == "No, score=-1.0 required=5.0 tests=none"


# endregion

# region the worker on a real spool


@pytest.fixture
def settings(tmp_path):
    values = config.load(environ={}, overrides={
        "data_dir": str(tmp_path / "data"), "virus_scan": False,
        "bayes_enabled": False, "filter_retry": 30.0, "hostname": "gw.test"})
    database = db.open_database(values.database_url)
    db.migrate(database)
    yield values
    tracking.flush()
    database.close()


def _store(spool: Spool, data: bytes, **fields) -> Envelope:
    env = Envelope(qid=new_qid(), sender="alice@example.net",
                   recipients=["user@example.com"], size=len(data), **fields)
    spool.store_new(env, data)
    return env


def _worker(settings) -> pipeline.FilterWorker:
    return pipeline.FilterWorker(settings)


def test_clean_mail_goes_to_deliver_with_verdict_headers(settings):
    worker = _worker(settings)
    env = _store(worker.spool, CLEAN)

    assert worker.run_once() == 1

    assert worker.spool.list("filtering") == []
    out_env, out = worker.spool.read("deliver", env.qid)
    assert out_env.verdict == "clean"
    head = out.split(b"\r\n\r\n")[0]
    assert b"X-Spam-Flag: NO" in head
    assert b"X-Spam-Status: No, score=0.0 required=3.0" in head
    assert b"forged" not in out  # the sender's own X-Spam-Status is gone
    assert out.endswith(b"\r\n\r\nSee you at noon.\r\n")
    tracking.flush()
    row = Message.get(Message.qid == env.qid)
    assert (row.verdict, row.subject) == ("clean", "lunch")


def test_smtp_score_alone_can_quarantine(settings):
    worker = _worker(settings)
    env = _store(worker.spool, CLEAN, smtp_score=7.0, smtp_notes=["DNSBL_ZEN"])

    worker.run_once()

    assert worker.spool.list("deliver") == []
    q_env, q_data = worker.spool.read_quarantine(env.qid)
    assert q_data == CLEAN and q_env.verdict == "spam"
    tracking.flush()
    item = QuarantineItem.get()
    assert item.kind == "spam" and item.message.status == "quarantined"


def test_malformed_mime_is_quarantined_not_delivered(settings):
    mime = pipeline._mime()
    if mime is None or not hasattr(mime, "parse"):
        pytest.skip("core.mime.parse is not there yet")
    bomb = paths.case("034") / "input.eml"
    worker = _worker(settings)
    env = _store(worker.spool, bomb.read_bytes())

    worker.run_once()

    assert worker.spool.list("deliver") == []
    assert env.qid in os.listdir(worker.spool.quarantine_dir)
    tracking.flush()
    assert QuarantineItem.get().kind == "attachment"


def test_message_not_due_waits_in_incoming(settings):
    worker = _worker(settings)
    env = _store(worker.spool, CLEAN, next_attempt=time.time() + 60)

    assert worker.run_once() == 1  # claimed, looked at, handed back
    assert worker.run_once() == 0  # remembered: not claimed again

    assert worker.spool.list("incoming") == [env.qid]


def _virus_settings(settings, clamd_setting):
    return settings.replace(virus_scan=True, clamd=clamd_setting)


def test_eicar_goes_to_virus_quarantine(settings, clamd_running):
    pytest.importorskip("core.filters.virus")
    worker = _worker(_virus_settings(settings, clamd_running.setting))
    data = (b"From: <x@example.net>\r\nSubject: test\r\n\r\n" + EICAR + b"\r\n")
    env = _store(worker.spool, data)

    worker.run_once()

    assert env.qid in os.listdir(worker.spool.quarantine_dir)
    tracking.flush()
    item = QuarantineItem.get()
    assert item.kind == "virus"
    assert "Eicar" in item.message.virus or "EICAR" in item.message.virus.upper()


# core/filters/virus.py leaves its socket open when clamd refuses the
# connection; the warning that raises at garbage collection is not ours.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_clamd_down_keeps_mail_queued(settings, tmp_path):
    # An address where nothing listens: the scanner cannot be reached.
    worker = _worker(_virus_settings(settings, f"unix:{tmp_path / 'no.sock'}"))
    env = _store(worker.spool, CLEAN)

    worker.run_once()

    assert worker.spool.list("deliver") == []
    assert worker.spool.list("incoming") == [env.qid]
    back, _data = worker.spool.read("incoming", env.qid)
    assert back.next_attempt > time.time() + 20
    tracking.flush()
    row = Message.get(Message.qid == env.qid)
    assert row.status == "deferred" and "not filtered yet" in row.detail


# core/filters/virus.py leaves its socket open when clamd refuses the
# connection; the warning that raises at garbage collection is not ours.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_clamd_down_fail_open_delivers(settings, tmp_path):
    worker = _worker(_virus_settings(settings, f"unix:{tmp_path / 'no.sock'}")
                     .replace(virus_fail_open=True))
    env = _store(worker.spool, CLEAN)

    worker.run_once()

    _env, out = worker.spool.read("deliver", env.qid)
    assert b"VIRUS_NOT_SCANNED" in out


# endregion


@pytest.mark.case("019-from-paren-confusion")
@pytest.mark.parametrize("number", ["019", "020"])
def test_unparseable_from_is_flagged_in_the_score(settings, number):
    """Cases 019/020: a From no strict parser accepts must not pass as clean.

    The message was relayed with score 0: nothing looked at the invalid-from
    defect the MIME layer reported.
    """
    from core import mime

    parsed = mime.parse((paths.case(number) / "input.eml").read_bytes())
    env = Envelope(qid=new_qid(), sender="s@example.net", recipients=["u@example.com"])
    ctx = decision.Context.build(settings, env, parsed)
    result = decision.decide(ctx)
    assert "PC_FROM_INVALID" in ctx.tests
    assert result.score >= 2.5
    assert parsed.from_addresses == [] or "example.com" not in parsed.from_addresses


def test_welcome_listed_spam_is_relayed_but_a_virus_is_not(settings):
    """A welcome-list hit at SMTP time skips the spam quarantine, nothing else."""
    from types import SimpleNamespace

    spam = SimpleNamespace(score=9.0, probability=1.0, note="")
    virus = SimpleNamespace(infected=True, name="Eicar-Test-Signature")
    env = Envelope(qid=new_qid(), sender="boss@example.net",
                   recipients=["u@example.com"], smtp_notes=["welcome_list=sender"])
    parsed = ParsedMessage()

    relayed = decision.decide(decision.Context.build(settings, env, parsed, spam=spam))
    held = decision.decide(decision.Context.build(settings, env, parsed, virus=virus,
                                                  spam=spam))
    assert relayed.action == "relay"
    assert held.action == "quarantine" and held.kind == "virus"
