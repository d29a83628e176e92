"""Header edits on the raw bytes: the relayed message is never re-serialised.

Re-serialising through the stdlib re-folds every header and recurses over
the tree; it hangs on a long parameter name (cpython#138223, case 060) and
raises RecursionError on deep message/rfc822 chains (case 035), after all
checks have passed. Here only the lines we add or drop change; every other
byte stays as it came.
"""

from __future__ import annotations

import base64
import fnmatch
import re

from core.mime import headers
from core.mime.limits import DEFAULT

# RFC 5322 2.1.1: lines SHOULD be at most 78 characters.
FOLD_AT = 78
# RFC 2047 2: an encoded word is at most 75 characters; 30 bytes of UTF-8
# give 40 base64 characters, a 52-character word.
_WORD_BYTES = 30
_NAME = re.compile(r"[!-9;-~]+")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]+")
# Re-reads of the header block in remove_headers; each removes a field.
_PASSES = 8


def _line_end(data: bytes) -> bytes:
    nl = data.find(b"\n")
    if nl > 0 and data[nl - 1] == 0x0D:
        return b"\r\n"
    return b"\n" if nl >= 0 else b"\r\n"


def _encoded_words(text: str) -> list[str]:
    out, chunk = [], b""
    for ch in text:
        raw = ch.encode("utf-8")
        if len(chunk) + len(raw) > _WORD_BYTES:
            out.append(chunk)
            chunk = b""
        chunk += raw
    if chunk:
        out.append(chunk)
    return ["=?utf-8?B?" + base64.b64encode(c).decode("ascii") + "?=" for c in out]


def fold(name: str, value: str, eol: bytes = b"\r\n") -> bytes:
    """One header field, 7-bit, folded at white space near 78 columns."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"not a header field name: {name!r}")
    value = _CONTROLS.sub(" ", value).strip()
    if value.isascii() and all(len(w) < 900 for w in value.split(" ")):
        tokens = value.split()
    else:
        tokens = _encoded_words(" ".join(value.split()))
    lines = []
    line = name + ":"
    for index, token in enumerate(tokens):
        if index and len(line) + 1 + len(token) > FOLD_AT:
            lines.append(line)
            line = " " + token
        else:
            line += " " + token
    lines.append(line)
    return eol.join(part.encode("ascii") for part in lines) + eol


def add_headers(data: bytes, fields: list[tuple[str, str]]) -> bytes:
    """The message with ``fields`` put on top, in order; the rest unchanged."""
    eol = _line_end(data)
    return b"".join(fold(name, value, eol) for name, value in fields) + data


def remove_headers(data: bytes, names: list[str] | tuple[str, ...]) -> bytes:
    """The message without the top-level fields named (``X-Spam-*`` globs too).

    The top header block is read exactly as parse reads it (the same
    splitter), so a field parse sees is a field removed here, continuation
    lines and all; a junk line right before a removed field goes with it.
    Dropping a field can change how its neighbours read (a junk line or an
    unindented continuation depends on the line before), so the block is
    read again until nothing named is left, at most ``_PASSES`` times.
    """
    patterns = [n.lower() for n in names]
    if not _may_hold(data, patterns):
        return data
    for _ in range(_PASSES):
        block = headers.split(data, 0, len(data), DEFAULT, top=True)
        named = zip(block.fields, block.spans, strict=True)
        cuts = [span for (name, _), span in named
                if any(fnmatch.fnmatchcase(name.lower(), p) for p in patterns)]
        if not cuts:
            return data
        junk_ending = {end: start for start, end in block.junk}
        out = []
        pos = 0
        for start, end in cuts:
            while start in junk_ending and junk_ending[start] >= pos:
                start = junk_ending[start]
            out.append(data[pos:start])
            pos = end
        out.append(data[pos:])
        data = b"".join(out)
    return data


def _may_hold(data: bytes, patterns: list[str]) -> bool:
    """Whether any line of ``data`` starts with a pattern's literal prefix.

    A field name starts a line, so a message in which no line starts like
    any pattern has nothing to remove; this byte search spares most
    messages the full header split (it was two thirds of a millisecond per
    message in the filter workers).
    """
    lowered = data.lower()
    for pattern in patterns:
        cut = min((i for i, ch in enumerate(pattern) if ch in "*?["),
                  default=len(pattern))
        prefix = pattern[:cut].encode("ascii", "replace")
        if not prefix:
            return True
        if lowered.startswith(prefix) or b"\n" + prefix in lowered:
            return True
    return False


def normalize_newlines(data: bytes) -> bytes:
    """Every bare CR and bare LF made CRLF (case 003), other bytes kept."""
    if b"\r" not in data:
        return data.replace(b"\n", b"\r\n")
    return re.sub(rb"\r\n|\r|\n", b"\r\n", data)

