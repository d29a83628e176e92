"""Delivery status notifications: shape (RFC 3464 / 6522) and when none is made."""

from __future__ import annotations

import email
import email.policy

from core import bounce
from core.spool import Envelope

ORIGINAL = (b"From: <alice@example.net>\r\nSubject: report\r\n"
            b"Message-ID: <r1@example.net>\r\n\r\nsecret body text\r\n")


def _env(**fields) -> Envelope:
    values = {"qid": "18C0FFEE000000001", "sender": "alice@example.net",
              "recipients": ["gone@example.com"], **fields}
    return Envelope(**values)


def test_report_parts_and_fields():
    failures = [bounce.Failure("gone@example.com", "550 5.1.1 <gone>: no such user",
                               remote="127.0.0.1:25")]

    env, data = bounce.make_bounce(_env(), ORIGINAL, failures, "gw.test")

    assert env.sender == "" and env.recipients == ["alice@example.net"]
    assert env.is_bounce and env.direction == "out"
    report = email.message_from_bytes(data, policy=email.policy.default)
    assert report["Auto-Submitted"] == "auto-replied"
    kinds = [part.get_content_type() for part in report.iter_parts()]
    assert kinds == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    text = data.decode()
    assert "Reporting-MTA: dns; gw.test" in text
    assert "Final-Recipient: rfc822; gone@example.com" in text
    assert "Status: 5.1.1" in text
    assert "Remote-MTA: dns; 127.0.0.1:25" in text
    assert "Diagnostic-Code: smtp; 550 5.1.1 <gone>: no such user" in text
    assert "Message-ID: <r1@example.net>" in text
    assert "secret body text" not in text  # headers only are returned
    assert all(line == line.rstrip("\r") for line in text.split("\r\n"))


def test_no_bounce_for_null_sender_or_a_bounce():
    failures = [bounce.Failure("gone@example.com", "550 5.1.1 no")]
    assert bounce.make_bounce(_env(sender=""), ORIGINAL, failures, "gw") is None
    assert bounce.make_bounce(_env(is_bounce=True), ORIGINAL, failures, "gw") is None
    assert bounce.make_bounce(_env(), ORIGINAL, [], "gw") is None


def test_status_codes():
    assert bounce.status_of(bounce.Failure("a", "550 5.7.1 refused")) == "5.7.1"
    assert bounce.status_of(bounce.Failure("a", "554 refused")) == "5.0.0"
    assert bounce.status_of(bounce.Failure("a", "451 x", status="4.4.7")) == "4.4.7"


def test_remote_text_cannot_inject_fields():
    failures = [bounce.Failure("gone@example.com",
                               "550 no\r\nStatus: 2.0.0\r\nAction: delivered")]

    _env_out, data = bounce.make_bounce(_env(), ORIGINAL, failures, "gw.test")

    text = data.decode()
    assert "\r\nAction: delivered" not in text
    assert "\r\nStatus: 2.0.0" not in text


def test_utf8_addresses_use_utf8_type():
    failures = [bounce.Failure("j\u00f6rg@example.com", "550 5.1.1 no")]

    env, data = bounce.make_bounce(_env(sender="b\u00e9a@example.net"), ORIGINAL,
                                   failures, "gw.test")

    assert env.mail_options == ["SMTPUTF8"]
    assert b"Final-Recipient: utf-8; " in data
    assert "To: <b\u00e9a@example.net>".encode() in data
