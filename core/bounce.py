"""Delivery status notifications (bounces) for recipients that failed.

A bounce is a ``multipart/report`` (RFC 6522) with a human-readable part,
a ``message/delivery-status`` part (RFC 3464) and the original header
section (``text/rfc822-headers``), sent from the null sender so that it can
never bounce itself (RFC 5321 4.5.5). No bounce is made for mail from the
null sender or for a bounce.
"""

from __future__ import annotations

import dataclasses
import email.utils
import re
import secrets
import time

from core.spool import Envelope, new_qid

# RFC 3463 2: the enhanced code follows the reply code, in the same class.
_STATUS = re.compile(r"^\s*([245])\d\d[ -]+([245])\.(\d{1,3})\.(\d{1,3})\b")
_CODE = re.compile(r"^\s*([245])\d\d\b")

# Header section of the original kept in the report, in bytes; the rest of
# the original is not returned (RFC 3462 allows headers only).
MAX_RETURNED_HEADERS = 64 * 1024


@dataclasses.dataclass
class Failure:
    """One recipient that could not be delivered."""

    recipient: str
    reply: str  # the remote reply, or our own words for a local failure
    status: str = ""  # enhanced status code; taken from reply when empty
    remote: str = ""  # host that answered, "" when none did


def status_of(failure: Failure) -> str:
    """The enhanced status code (RFC 3463) for the report."""
    if failure.status:
        return failure.status
    found = _STATUS.match(failure.reply or "")
    if found and found.group(1) == found.group(2):
        return ".".join(found.group(2, 3, 4))
    code = _CODE.match(failure.reply or "")
    return f"{code.group(1)}.0.0" if code else "5.0.0"


def _clean(text: str, limit: int = 900) -> str:
    # DSN fields are one header line each: no CR/LF, ASCII only (RFC 3464 2.1).
    flat = " ".join(str(text).split())
    return flat.encode("ascii", "replace").decode("ascii")[:limit]


def _address_field(address: str) -> str:
    # RFC 6533 3.2: a non-ASCII address uses the utf-8 address type.
    try:
        address.encode("ascii")
    except UnicodeEncodeError:
        return "utf-8; " + _clean(address.encode("ascii", "backslashreplace")
                                  .decode("ascii"))
    return "rfc822; " + _clean(address)


def _header_section(data: bytes) -> bytes:
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[:end + 2]
    return head[:MAX_RETURNED_HEADERS]


def build_dsn(envelope: Envelope, data: bytes, failures: list[Failure],
              hostname: str, now: float | None = None) -> bytes:
    """The bytes of the report for ``failures`` of ``envelope``."""
    now = time.time() if now is None else now
    boundary = f"=_portcullis_{secrets.token_hex(12)}"
    date = email.utils.formatdate(now)
    arrival = email.utils.formatdate(envelope.received_at)
    host = _clean(hostname, 200)
    permanent = any(status_of(f).startswith("5") for f in failures)

    human = [
        f"This is the mail system at {host}.",
        "",
        "Your message could not be delivered to the recipients below."
        if permanent else
        "Your message could not be delivered in time to the recipients below.",
        "",
    ]
    for failure in failures:
        human.append(f"<{_clean(failure.recipient, 400)}>: {_clean(failure.reply)}")

    status = [
        f"Reporting-MTA: dns; {host}",
        f"X-Portcullis-Queue-ID: {envelope.qid}",
        f"Arrival-Date: {arrival}",
    ]
    for failure in failures:
        code = status_of(failure)
        status.append("")
        status.append(f"Final-Recipient: {_address_field(failure.recipient)}")
        status.append("Action: failed")
        status.append(f"Status: {code}")
        if failure.remote:
            status.append(f"Remote-MTA: dns; {_clean(failure.remote, 200)}")
        status.append(f"Diagnostic-Code: smtp; {_clean(failure.reply)}")
        status.append(f"Last-Attempt-Date: {date}")

    sender = envelope.sender
    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{host}>",
        # RFC 6532: an SMTPUTF8 sender's address stays UTF-8 in the header.
        f"To: <{' '.join(sender.split())[:400]}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {date}",
        f"Message-ID: <{envelope.qid}.{secrets.token_hex(4)}.bounce@{host}>",
        # RFC 3834 5: automatic responses must not trigger further ones.
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status;\r\n'
        f'\tboundary="{boundary}"',
    ]
    parts = [
        "\r\n".join(head).encode("utf-8", "replace") + b"\r\n\r\n",
        b"This is a MIME-encapsulated message.\r\n\r\n",
        f"--{boundary}\r\n".encode(),
        b"Content-Description: Notification\r\n",
        b"Content-Type: text/plain; charset=us-ascii\r\n\r\n",
        "\r\n".join(human).encode() + b"\r\n\r\n",
        f"--{boundary}\r\n".encode(),
        b"Content-Description: Delivery report\r\n",
        b"Content-Type: message/delivery-status\r\n\r\n",
        "\r\n".join(status).encode() + b"\r\n\r\n",
        f"--{boundary}\r\n".encode(),
        b"Content-Description: Undelivered message headers\r\n",
        b"Content-Type: text/rfc822-headers\r\n\r\n",
        _header_section(data),
        b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ]
    return b"".join(parts)


def make_bounce(envelope: Envelope, data: bytes, failures: list[Failure],
                hostname: str) -> tuple[Envelope, bytes] | None:
    """A new outgoing message reporting ``failures``, or None when none is due."""
    if not failures or not envelope.sender or envelope.is_bounce:
        return None
    body = build_dsn(envelope, data, failures, hostname)
    bounce = Envelope(
        qid=new_qid(), sender="", recipients=[envelope.sender],
        client_ip="", helo=hostname, direction="out", size=len(body),
        is_bounce=True, verdict="clean",
    )
    if any(ord(ch) > 127 for ch in envelope.sender):
        bounce.mail_options = ["SMTPUTF8"]
    return bounce, body
