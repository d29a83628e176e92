"""A stand-in for core.mime.parse, for the bench and tests only.

It builds a ``ParsedMessage`` with the standard library parser. It is not
hardened: deep nesting falls back to the raw text as one part.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
from email.header import decode_header, make_header

from core.message import ParsedMessage, Part


def _decode(value) -> str:
    try:
        return str(make_header(decode_header(str(value))))
    except Exception:
        return str(value)


def _text(sub) -> str | None:
    payload = sub.get_payload(decode=True) or b""
    charset = sub.get_content_charset() or "latin-1"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("latin-1", "replace")


def parse(data: bytes) -> ParsedMessage:
    """The message as the filters see it (compat32 parser, decoded by hand)."""
    if data.startswith(b"From "):
        data = data.split(b"\n", 1)[1] if b"\n" in data else b""
    parsed = ParsedMessage(size=len(data))
    try:
        msg = email.message_from_bytes(data, policy=email.policy.compat32)
        parsed.headers = [(k, _decode(v)) for k, v in msg.items()]
        leaves = list(msg.walk())
    except (RecursionError, Exception):
        parsed.malformed = True
        parsed.malformed_reason = "unparsable"
        parsed.parts = [Part(path="", content_type="text/plain",
                             text=data.decode("latin-1"))]
        return parsed
    parsed.subject = next((v for k, v in parsed.headers if k.lower() == "subject"), "")
    for index, sub in enumerate(leaves[:1000]):
        if sub.is_multipart():
            continue
        ctype = sub.get_content_type()
        part = Part(path=str(index), content_type=ctype,
                    charset=sub.get_content_charset() or "",
                    filename=_decode(sub.get_filename() or ""),
                    disposition=(sub.get_content_disposition() or ""))
        if ctype.startswith("text/") and not part.filename:
            part.text = _text(sub)
        parsed.parts.append(part)
    froms = [_decode(v) for k, v in msg.items() if k.lower() == "from"]
    parsed.from_addresses = [a for _, a in email.utils.getaddresses(froms) if "@" in a]
    return parsed
