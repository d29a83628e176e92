"""The whole gateway in a subprocess: real SMTP in, real clamd, real sink out.

One gateway serves the module; each test sends its own message and waits
for what the sink (the fake downstream) or the quarantine shows.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from core import config, db
from tests.support import paths
from tests.support.clamd import EICAR, clamd  # noqa: F401
from tests.support.gateway import Gateway
from tests.support.sink import Sink

CORPUS = paths.CORPUS / "dev"
TRAINED = 40  # messages of each kind learned before the gateway starts


def _corpus(kind: str, count: int) -> list[Path]:
    return sorted((CORPUS / kind).glob("*.eml"))[:count]


def _crlf(data: bytes) -> bytes:
    if data.startswith(b"From "):
        data = data.split(b"\n", 1)[1]
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _train(gateway: Gateway) -> bool:
    try:
        import core.spam as spam
    except ImportError:
        return False
    if not hasattr(spam, "train") or not CORPUS.is_dir():
        return False
    settings = config.load(gateway.config, environ={})
    database = db.open_database(settings.database_url)
    db.migrate(database)
    spam.train(_corpus("ham", TRAINED), _corpus("spam", TRAINED), progress=False,
               settings=settings)
    database.close()
    return True


@pytest.fixture(scope="module")
def sink(tmp_path_factory):
    server = Sink(tmp_path_factory.mktemp("sink")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, sink, clamd, dns_server):
    gw = Gateway(tmp_path_factory.mktemp("gateway"), sink.address,
                 clamd=clamd.setting, dns_port=dns_server.port,
                 bayes_min_learned=20, bayes_autolearn=False)
    gw.trained = _train(gw)
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture
def downstream(sink):
    sink.set_rules()
    return sink


def _message(subject: str, body: str = "Hello there.", extra: str = "") -> bytes:
    return (f"From: Alice <alice@example.net>\r\nTo: <user@example.com>\r\n"
            f"Subject: {subject}\r\nMessage-ID: <{subject}@example.net>\r\n"
            f"{extra}\r\n{body}\r\n").encode()


def _with_subject(subject: str):
    return lambda tx: f"Subject: {subject}".encode() in tx.data


def test_clean_mail_relayed_with_spam_headers(gateway, downstream):
    data = _message("e2e-clean", extra="X-Spam-Flag: YES\r\nX-Spam-Score: 99\r\n")

    qid = gateway.send("alice@example.net", ["user@example.com"], data)

    [tx] = downstream.wait_for(_with_subject("e2e-clean"))
    assert tx.sender == "alice@example.net" and tx.recipients == ["user@example.com"]
    assert tx.header("X-Spam-Flag") == ["NO"]
    assert tx.header("X-Spam-Score") != ["99"]
    assert len(tx.header("X-Spam-Status")) == 1
    assert tx.header("X-Spam-Status")[0].startswith("No, score=")
    assert tx.data.endswith(b"\r\n\r\nHello there.\r\n")
    assert gateway.wait_log(qid, "event=filtered verdict=clean")


def test_downstream_4xx_retried_then_delivered(gateway, downstream):
    downstream.set_rules(fail_first=1, fail_reply="451 4.3.0 try later")

    gateway.send("alice@example.net", ["user@example.com"], _message("e2e-retry"))

    [tx] = downstream.wait_for(_with_subject("e2e-retry"), timeout=30)
    assert tx.attempt >= 2


def test_downstream_5xx_bounces_to_sender(gateway, downstream):
    downstream.set_rules(rcpt={"nobody@example.com": "550 5.1.1 no such user"})

    qid = gateway.send("alice@example.net", ["nobody@example.com"],
                       _message("e2e-bounce"))

    [dsn] = downstream.wait_for(lambda tx: qid.encode() in tx.data
                                and tx.sender == "")
    assert dsn.recipients == ["alice@example.net"]
    assert b"multipart/report" in dsn.data and b"Status: 5.1.1" in dsn.data


def test_no_bounce_for_null_sender(gateway, downstream):
    downstream.set_rules(rcpt={"nobody2@example.com": "550 5.1.1 no such user"})

    qid = gateway.send("", ["nobody2@example.com"], _message("e2e-nullsender"))

    assert gateway.wait_empty()
    time.sleep(0.5)
    assert not [tx for tx in downstream.transactions() if qid.encode() in tx.data]
    assert gateway.wait_log(qid, "event=no_bounce")


def test_eicar_lands_in_virus_quarantine(gateway, downstream):
    data = _message("e2e-eicar", body=EICAR.decode())

    qid = gateway.send("alice@example.net", ["user@example.com"], data)

    assert gateway.wait_quarantined(qid)
    assert gateway.wait_log(qid, "event=quarantine kind=virus")
    assert not downstream.wait_for(_with_subject("e2e-eicar"), timeout=0.5)


def test_trained_spam_lands_in_spam_quarantine(gateway, downstream):
    if not gateway.trained:
        pytest.skip("core.spam.train or the corpus is not there")
    spam = _crlf(_corpus("spam", TRAINED)[3].read_bytes())

    qid = gateway.send("spammer@example.org", ["user@example.com"], spam)

    assert gateway.wait_quarantined(qid), gateway.log_lines(qid)
    assert gateway.wait_log(qid, "event=quarantine kind=spam")


def test_clamd_down_keeps_mail_queued_until_it_returns(gateway, downstream, clamd):
    clamd.stop()
    try:
        qid = gateway.send("alice@example.net", ["user@example.com"],
                           _message("e2e-clamd-down"))
        time.sleep(2.0)  # two filter_retry periods
        assert not downstream.wait_for(_with_subject("e2e-clamd-down"), timeout=0)
        assert qid in gateway.queue()["incoming"] + gateway.queue()["filtering"]
    finally:
        clamd.start()

    [tx] = downstream.wait_for(_with_subject("e2e-clamd-down"), timeout=30)
    assert tx.header("X-Spam-Flag") == ["NO"]


def test_delivery_uses_starttls_when_offered(gateway, downstream, tmp_path):
    # The hop here is the gateway itself, which offers STARTTLS.
    import asyncio

    from core import delivery
    from core.spool import Envelope, Spool, new_qid

    hop = f"127.0.0.1:{gateway.port_in}"
    settings = config.load(environ={}, overrides={
        "data_dir": str(tmp_path / "agent"), "downstream": hop, "smarthost": hop,
        "hostname": "agent.test"})
    database = db.open_database(settings.database_url)
    db.migrate(database)
    spool = Spool(settings.data_dir)
    env = Envelope(qid=new_qid(), sender="alice@example.net",
                   recipients=["user@example.com"])
    spool.rewrite(env, _message("e2e-starttls"), "deliver")

    async def run():
        agent = delivery.DeliveryAgent(settings, spool)
        task = asyncio.ensure_future(agent.run())
        deadline = time.monotonic() + 20
        while (spool.list("deliver") or spool.list("sending")) \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        agent.stop()
        await task

    asyncio.run(run())
    database.close()

    assert downstream.wait_for(_with_subject("e2e-starttls"))
    assert gateway.wait_log("", "name=agent.test tls=yes")
