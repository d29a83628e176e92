"""Content-Transfer-Encoding decoders as lenient as the mail clients.

Clients decode what a strict decoder refuses, and malware relies on that
(gmime#150, enmime#75): base64 with padding in the middle
(``WDU=TyE=...``), junk lines between base64 lines, a lone trailing
character; quoted-printable with bad escapes. Each decoder returns the bytes
a client would show and a list of defects describing what it had to forgive,
so a filter can treat "decoded with defects" as suspicious, never as empty.
"""

from __future__ import annotations

import binascii
import re

_B64_ALPHABET = (b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                 b"0123456789+/=")
_B64_SPACE = b" \t\r\n"
# Everything that is neither alphabet nor line end, for bytes.translate.
_B64_OTHER = bytes(b for b in range(256) if b not in _B64_ALPHABET + b"\r\n")
_NOT_ALPHABET = bytes(b for b in range(256) if b not in _B64_ALPHABET)
_PADS = re.compile(rb"=+")


def _b64_chunk(chunk: bytes, defects: list[str]) -> bytes:
    rest = len(chunk) % 4
    if rest == 1:
        # One stray character carries no whole byte; clients drop it.
        defects.append("base64-stray-character")
        chunk = chunk[:-1]
    elif rest:
        chunk += b"=" * (4 - rest)
    try:
        return binascii.a2b_base64(chunk)
    except (binascii.Error, ValueError):
        defects.append("base64-undecodable")
        return b""


def decode_base64(data: bytes) -> tuple[bytes, list[str]]:
    """Base64 decoded as clients do: junk skipped, decoding goes on after '='."""
    defects: list[str] = []
    if b" " in data or b"\t" in data or data.translate(None, _B64_OTHER) != data:
        # Lines with characters outside the alphabet (or words with spaces)
        # are text mixed into the encoding, a note or a stray header line;
        # clients skip them.
        kept = []
        for line in data.split(b"\n"):
            stripped = line.strip(_B64_SPACE)
            if stripped.translate(None, _NOT_ALPHABET) == stripped:
                kept.append(stripped)
            else:
                defects.append("base64-junk-line")
        data = b"".join(kept)
        if len(defects) > 1:
            defects = [f"base64-junk-line: {len(defects)} lines"]
    data = data.translate(None, _NOT_ALPHABET)
    body = data.rstrip(b"=")
    if b"=" not in body:
        return _b64_chunk(body, defects), defects
    defects.append("base64-padding-inside")
    out = [_b64_chunk(chunk, defects) for chunk in _PADS.split(body) if chunk]
    return b"".join(out), _dedupe(defects)


def decode_qp(data: bytes) -> tuple[bytes, list[str]]:
    """Quoted-printable (RFC 2045 6.7); bad escapes stay as written."""
    defects: list[str] = []
    try:
        return binascii.a2b_qp(data), defects
    except (binascii.Error, ValueError):
        defects.append("qp-undecodable")
        return data, defects


def decode_uu(data: bytes) -> tuple[bytes, list[str]]:
    """uuencode (begin/end lines); broken lines are decoded as far as they go."""
    defects: list[str] = []
    out = []
    inside = False
    for line in data.split(b"\n"):
        line = line.rstrip(b"\r")
        if not inside:
            inside = line.startswith(b"begin ")
            continue
        if line.strip() in (b"end", b"`"):
            if line.strip() == b"end":
                break
            continue
        if not line:
            continue
        try:
            out.append(binascii.a2b_uu(line))
        except (binascii.Error, ValueError):
            # Some encoders leave lines a byte short; a2b_uu wants its own
            # length prefix to match, so decode what the prefix allows.
            try:
                count = (line[0] - 32) & 63
                out.append(binascii.a2b_uu(line[: 1 + (count * 4 + 2) // 3]))
            except (binascii.Error, ValueError, IndexError):
                defects.append("uu-undecodable-line")
    if not inside:
        defects.append("uu-no-begin-line")
    return b"".join(out), _dedupe(defects)


IDENTITY = ("", "7bit", "8bit", "binary")
DECODERS = {
    "base64": decode_base64,
    "quoted-printable": decode_qp,
    "x-uuencode": decode_uu,
    "uuencode": decode_uu,
    "x-uue": decode_uu,
}


def decode(data: bytes, encoding: str) -> tuple[bytes, list[str]]:
    """The payload for a Content-Transfer-Encoding value (already lowercased)."""
    if encoding in IDENTITY:
        return data, []
    decoder = DECODERS.get(encoding)
    if decoder is None:
        return data, [f"unknown-transfer-encoding: {encoding[:40]!r}"]
    return decoder(data)


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
