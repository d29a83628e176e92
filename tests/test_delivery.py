"""The delivery agent against a real recording SMTP sink in its own process."""

from __future__ import annotations

import asyncio
import email
import email.policy
import time

import pytest

from core import config, db, delivery, tracking
from core.models import Message, Recipient
from core.spool import Envelope, Spool, new_qid
from tests.support.sink import sink  # noqa: F401

BODY = (b"From: <alice@example.net>\r\nTo: <user@example.com>\r\n"
        b"Subject: dots\r\nMessage-ID: <dots@example.net>\r\n\r\n"
        b".\r\n..\r\n.hidden\r\nplain\r\n...\r\nEND-OF-BODY-MARKER\r\n")


@pytest.fixture
def settings(tmp_path, sink):
    values = config.load(environ={}, overrides={
        "data_dir": str(tmp_path / "data"), "downstream": sink.address,
        "smarthost": sink.address, "hostname": "gw.test",
        "retry_initial": 0.2, "retry_max": 0.4, "delivery_concurrency": 4})
    database = db.open_database(values.database_url)
    db.migrate(database)
    yield values
    tracking.flush()
    database.close()


def _queue(settings, data: bytes = BODY, **fields) -> Envelope:
    values = {"sender": "alice@example.net", "recipients": ["user@example.com"],
              **fields}
    env = Envelope(qid=new_qid(), size=len(data), **values)
    Spool(settings.data_dir).rewrite(env, data, "deliver")
    tracking.received(env, "<dots@example.net>", "dots")
    return env


def _run(settings, until, timeout: float = 10.0) -> delivery.DeliveryAgent:
    """Run an agent until ``until(spool)`` holds (or the time is up)."""
    async def main():
        agent = delivery.DeliveryAgent(settings)
        task = asyncio.ensure_future(agent.run())
        deadline = time.monotonic() + timeout
        while not until(agent.spool) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        agent.stop()
        await task
        return agent

    return asyncio.run(main())


def _empty(spool: Spool) -> bool:
    return not spool.list("deliver") and not spool.list("sending")


def test_relays_with_dot_stuffing_and_exact_addresses(settings, sink):
    rcpts = ['"john..doe"@example.com', "Mixed.Case@Example.COM"]
    env = _queue(settings, sender='"odd sender"@example.net', recipients=rcpts)

    _run(settings, _empty)

    [tx] = sink.transactions()
    assert tx.mail_line.startswith('MAIL FROM:<"odd sender"@example.net>')
    assert tx.rcpt_lines == [f"RCPT TO:<{r}>" for r in rcpts]
    assert tx.data == BODY  # after the sink's un-stuffing: byte for byte
    assert b"\r\n..\r\n...\r\n..hidden\r\n" in tx.wire
    tracking.flush()
    assert Message.get(Message.qid == env.qid).status == "delivered"
    assert {r.status for r in Recipient.select()} == {"delivered"}


def test_bare_line_ends_never_leave_unnormalised(settings, sink):
    # Outbound smuggling (case 001): <LF>.<CR><LF> must not reach the hop.
    data = b"Subject: x\r\n\r\nline\n.\r\nMAIL FROM:<ceo@example.com>\r\nend\r"
    _queue(settings, data)

    _run(settings, _empty)

    [tx] = sink.transactions()
    wire = tx.wire.replace(b"\r\n", b"")
    assert b"\r" not in wire and b"\n" not in wire
    assert b"\r\n..\r\nMAIL FROM" in tx.wire


def test_temporary_failure_is_retried_then_delivered(settings, sink):
    sink.set_rules(fail_first=1, fail_reply="451 4.3.0 greylisted")
    _queue(settings)

    _run(settings, _empty)

    [tx] = sink.transactions()
    assert tx.data == BODY and tx.attempt == 2
    tracking.flush()
    row = Recipient.get()
    assert row.status == "delivered" and row.attempts == 2


def test_deferred_message_waits_with_backoff(settings, sink):
    sink.set_rules(fail_first=100)
    env = _queue(settings)

    _run(settings, lambda spool: bool(spool.list("deliver")) and
         Spool.read_file(spool.path("deliver", env.qid))[0].attempts >= 2)

    back, _data = Spool(settings.data_dir).read("deliver", env.qid)
    assert back.rcpt_state["user@example.com"].status == "deferred"
    assert back.rcpt_state["user@example.com"].reply.startswith("451")
    assert back.next_attempt > time.time()
    assert sink.transactions() == []


def test_permanent_failure_bounces_to_sender(settings, sink):
    sink.set_rules(rcpt={"gone@example.com": "550 5.1.1 no such user"})
    env = _queue(settings, recipients=["user@example.com", "gone@example.com"])

    _run(settings, lambda spool: _empty(spool) and len(sink.transactions()) >= 2)

    first, dsn = sink.transactions()
    assert first.accepted == ["user@example.com"]
    assert dsn.sender == "" and dsn.recipients == ["alice@example.net"]
    report = email.message_from_bytes(dsn.data, policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    status = report.get_payload()[1]
    assert status.get_content_type() == "message/delivery-status"
    text = dsn.data.decode()
    assert "Final-Recipient: rfc822; gone@example.com" in text
    assert "Status: 5.1.1" in text and "Action: failed" in text
    assert "Message-ID: <dots@example.net>" in text  # original headers returned
    assert "Final-Recipient: rfc822; user@example.com" not in text
    tracking.flush()
    assert Message.get(Message.qid == env.qid).status == "partial"


def test_no_bounce_for_null_sender_or_bounce(settings, sink):
    sink.set_rules(rcpt={"gone@example.com": "550 5.1.1 no such user"})
    _queue(settings, sender="", recipients=["gone@example.com"])
    _queue(settings, sender="mailer@example.net", recipients=["gone@example.com"],
           is_bounce=True)

    _run(settings, _empty)
    time.sleep(0.3)

    assert sink.transactions() == []
    assert _empty(Spool(settings.data_dir))


def test_expired_message_bounces(settings, sink):
    sink.set_rules(rcpt={"user@example.com": "452 4.2.2 mailbox full"})
    expired = settings.replace(queue_lifetime=0.0)
    _queue(expired)

    _run(expired, lambda spool: _empty(spool) and sink.transactions())

    [dsn] = sink.transactions()
    text = dsn.data.decode()
    assert dsn.recipients == ["alice@example.net"]
    assert "Status: 4.4.7" in text and "452 4.2.2 mailbox full" in text


def test_unreachable_hop_defers(settings, sink):
    sink.stop()
    env = _queue(settings)

    _run(settings, lambda spool: bool(spool.list("deliver")) and
         Spool.read_file(spool.path("deliver", env.qid))[0].attempts >= 1)

    back, _data = Spool(settings.data_dir).read("deliver", env.qid)
    state = back.rcpt_state["user@example.com"]
    assert state.status == "deferred" and state.reply.startswith("421 4.4.1")


def test_connection_reused_for_next_messages(settings, sink):
    for _ in range(5):
        _queue(settings)

    _run(settings.replace(delivery_concurrency=1), _empty)

    found = sink.wait_for(count=5)
    assert len(found) == 5
    assert len({tx.session for tx in found}) == 1


def test_smtputf8_and_8bitmime_passed_on(settings, sink):
    data = "Subject: caf\u00e9\r\n\r\nna\u00efve\r\n".encode()
    _queue(settings, data, sender="jos\u00e9@example.net",
           recipients=["user@example.com"], mail_options=["BODY=8BITMIME",
                                                          "SMTPUTF8"])

    _run(settings, _empty)

    [tx] = sink.transactions()
    assert tx.sender == "jos\u00e9@example.net"
    assert "BODY=8BITMIME" in tx.mail_line and "SMTPUTF8" in tx.mail_line
    assert tx.data == data


def test_stuffing_function():
    assert delivery.stuff(b".a\r\nb") == b"..a\r\nb\r\n.\r\n"
    assert delivery.stuff(b"a\n.\r\n") == b"a\r\n..\r\n.\r\n"
    assert delivery.stuff(b"") == b".\r\n"


def test_reply_timeout_and_multiline_replies():
    """A hop that stops answering gives 421 after the timeout; a reply over
    several lines is read whole."""

    async def main() -> tuple[tuple[int, str], str]:
        gone = asyncio.Event()

        async def hop(reader, writer) -> None:
            writer.write(b"250-first\r\n250-second\r\n250 last\r\n")
            await reader.read()  # then silence until the client goes
            writer.close()
            await writer.wait_closed()
            gone.set()

        server = await asyncio.start_server(hop, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        conn = delivery.Connection("127.0.0.1", port, reader, writer)
        whole = await conn.reply(5.0)
        try:
            await conn.reply(0.2)
            error = ""
        except delivery.SMTPError as exc:
            error = exc.reply
        conn.close()
        await writer.wait_closed()
        await asyncio.wait_for(gone.wait(), 5.0)
        server.close()
        await server.wait_closed()
        return whole, error

    whole, error = asyncio.run(main())
    assert whole == (250, "first\nsecond\nlast")
    assert error.startswith("421 4.4.2") and "timed out" in error
