"""Message bytes at the end of DATA: line ends, line length, trace headers.

Everything here works on raw bytes with a few linear passes; nothing parses
MIME, because it runs on the SMTP event loop for every message.
"""

from __future__ import annotations

import email.header
import email.utils
import re

_ANY_EOL = re.compile(rb"\r\n|\r|\n")
_TOKEN_SAFE = re.compile(r"[^A-Za-z0-9.:\[\]_-]")
_TLS_SAFE = re.compile(r"[^A-Za-z0-9 ._-]")
_HEADER_SAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

# RFC 5321 s4.5.3.1.6: 1000 octets per line including CRLF.
MAX_LINE = 998


def has_bare_line_ends(data: bytes) -> bool:
    """True if some CR is not followed by LF or some LF not preceded by CR."""
    pairs = data.count(b"\r\n")
    return data.count(b"\r") != pairs or data.count(b"\n") != pairs


def normalise_line_ends(data: bytes) -> bytes:
    """Every bare CR and bare LF becomes CRLF (Postfix: 'normalize')."""
    if not has_bare_line_ends(data):
        return data
    return _ANY_EOL.sub(b"\r\n", data)


def longest_line(data: bytes) -> int:
    """Length of the longest line without its CRLF (data has CRLF ends only)."""
    return max(map(len, data.split(b"\r\n")))


def header_block(data: bytes, limit: int = 256 * 1024) -> bytes:
    """The header section (up to the blank line), at most ``limit`` octets."""
    if data.startswith(b"\r\n"):
        return b""
    end = data.find(b"\r\n\r\n", 0, limit)
    return data[:end + 2] if end >= 0 else data[:limit]


def header_values(block: bytes, names: tuple[str, ...]) -> dict[str, str]:
    """First value of each wanted field, unfolded and decoded for display."""
    wanted = {name.lower().encode() for name in names}
    found: dict[str, str] = {}
    current: bytes | None = None
    parts: list[bytes] = []

    def finish() -> None:
        if current is not None and current.decode() not in found:
            raw = b" ".join(p.strip() for p in parts if p.strip())
            raw = raw.decode("utf-8", "replace")
            found[current.decode()] = _decode_words(raw)

    for line in block.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                parts.append(line)
            continue
        finish()
        name, colon, value = line.partition(b":")
        key = name.strip().lower()
        if colon and key in wanted:
            current, parts = key, [value]
        else:
            current, parts = None, []
    finish()
    return found


def _decode_words(value: str) -> str:
    if "=?" not in value:
        return value
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except Exception:  # malformed encoded words: show them as sent
        return value


def safe_token(text: str, limit: int = 255) -> str:
    """A client-chosen name made 7-bit and harmless inside a header."""
    return _TOKEN_SAFE.sub("?", text[:limit]) or "unknown"


def header_line(name: str, value: str) -> bytes:
    """``Name: value`` CRLF, with control characters that could start a new
    header replaced (header injection)."""
    name = re.sub(r"[^\x21-\x39\x3b-\x7e]", "-", name) or "X-Invalid"
    value = _HEADER_SAFE.sub(" ", value)
    return f"{name}: {value}\r\n".encode("utf-8", "replace")


def received_header(*, helo: str, client_ip: str, client_name: str, hostname: str,
                    protocol: str, qid: str, recipients: list[str],
                    tls: str = "") -> bytes:
    """The Received field of RFC 5321 s4.4, 7-bit, folded."""
    name = safe_token(client_name) if client_name else "unknown"
    ip = client_ip if ":" not in client_ip else f"IPv6:{client_ip}"
    lines = [f"Received: from {safe_token(helo)} ({name} [{ip}])"]
    if tls:
        lines.append(f"\t(using {_TLS_SAFE.sub('?', tls[:120])})")
    lines.append(f"\tby {safe_token(hostname)} (Portcullis) with {protocol} id {qid}")
    stamp = email.utils.formatdate(localtime=True)
    # One recipient only: listing several would disclose Bcc recipients.
    if len(recipients) == 1 and recipients[0].isascii() and "\r" not in recipients[0] \
            and "\n" not in recipients[0] and len(recipients[0]) < 300:
        lines.append(f"\tfor <{recipients[0]}>; {stamp}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{stamp}")
    return ("\r\n".join(lines) + "\r\n").encode("ascii", "replace")
