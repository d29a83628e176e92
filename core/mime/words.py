"""RFC 2047 encoded words (``=?charset?B|Q?text?=``) that never raise.

Adjacent words with the same charset are joined before decoding (a
multi-byte letter may be split across two words), white space between
encoded words is dropped (RFC 2047 6.2) when both use one charset, the
RFC 2231 language suffix (``=?utf-8*de?Q?...?=``) is ignored, and a bad
charset or broken base64 costs only that word: it falls back to a lossless
reading and a defect.
"""

from __future__ import annotations

import binascii
import re

from core.mime import charsets, transfer

# RFC 2047 2: encoded-text has no "?" and no space; the pattern has no
# nested repetition, so matching is linear.
_WORD = re.compile(r"=\?([^?\s*]{1,60})(?:\*[^?\s]{0,20})?\?([bBqQ])\?([^?\s]*)\?=")
_SPACE = re.compile(r"[ \t\r\n]*")


def _payload(kind: str, text: str, defects: list[str]) -> bytes:
    raw = text.encode("utf-8", "replace")
    if kind in "bB":
        data, problems = transfer.decode_base64(raw)
        if problems:
            defects.append("encoded-word-bad-base64")
        return data
    try:
        return binascii.a2b_qp(raw, header=True)
    except (binascii.Error, ValueError):
        defects.append("encoded-word-bad-q")
        return raw


def decode_words(value: str) -> tuple[str, list[str]]:
    """The value with its encoded words decoded, and what went wrong."""
    if "=?" not in value:
        return value, []
    defects: list[str] = []
    out: list[str] = []
    pending_charset = ""
    pending: list[bytes] = []

    def flush() -> None:
        if pending:
            text, defect = charsets.decode(b"".join(pending), pending_charset)
            if defect:
                defects.append("encoded-word-" + defect)
            out.append(text)
            pending.clear()

    pos = 0
    for match in _WORD.finditer(value):
        gap = value[pos:match.start()]
        charset = match.group(1)
        # Words in different charsets keep their space: RFC 2047 6.2 drops
        # it, but a subject rule looking for a word must still find it.
        joined = (pending and _SPACE.fullmatch(gap) is not None
                  and charset.lower() == pending_charset.lower())
        if not joined:
            flush()
            out.append(gap)
        pending_charset = charset
        pending.append(_payload(match.group(2), match.group(3), defects))
        pos = match.end()
    flush()
    out.append(value[pos:])
    return charsets.clean("".join(out)), list(dict.fromkeys(defects))
