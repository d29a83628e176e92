"""Header blocks split into fields, on the raw bytes, in one pass.

A field starts at a line ``name:`` (RFC 5322 2.2: name is printable ASCII
without colon; white space before the colon is obsolete syntax, 4.5) and goes
on over lines that begin with white space. Lines that are neither are
handled as lenient clients do, and each is named as a defect:

* a ``param=value`` line after a Content-Type/-Disposition ending in ``;``
  is an unindented continuation (MailScanner#638): joined, and malformed;
* a lone junk line before a field or the blank line is skipped
  (oletools#32);
* otherwise the body starts there, without a blank line (mail#205).
"""

from __future__ import annotations

import dataclasses
import re

from core.mime import charsets, words
from core.mime.limits import Limits

_NAME = re.compile(rb"[!-9;-~]+[ \t]*")
_PARAM_LINE = re.compile(rb"[ \t]*[A-Za-z0-9_.*-]+[ \t]*=")
_PARAMETRIC = (b"content-type", b"content-disposition")


@dataclasses.dataclass
class Block:
    fields: list[tuple[str, bytes]]  # name as written, raw value (unfolded)
    body_start: int
    defects: list[str]
    malformed: str = ""  # reason, "" when the block was within limits
    # Byte ranges [start, end) of each field (all its lines) and of each
    # skipped junk line, for edits that must read the block as parse does.
    spans: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    junk: list[tuple[int, int]] = dataclasses.field(default_factory=list)


def field_name(line: bytes) -> bytes | None:
    colon = line.find(b":")
    if colon <= 0:
        return None
    name = line[:colon]
    if _NAME.fullmatch(name) is None:
        return None
    return name.rstrip(b" \t")


def split(buf: bytes, start: int, end: int, limits: Limits,
          top: bool = False) -> Block:
    """The header fields of the entity at ``buf[start:end]``."""
    fields: list[list] = []  # [name, [value pieces], size, start, end]
    junk: list[tuple[int, int]] = []
    defects: list[str] = []
    malformed = ""
    pos = start
    body_start = end
    first = True
    while pos < end:
        nl = buf.find(b"\n", pos, end)
        next_pos = end if nl < 0 else nl + 1
        line = buf[pos:next_pos].rstrip(b"\r\n")
        if pos - start > limits.max_header_block:
            malformed = f"header block over {limits.max_header_block} bytes"
            body_start = pos
            break
        if not line:
            body_start = next_pos
            break
        if first and top and line.startswith(b"From "):
            # The mbox envelope line of a stored message, not a header.
            first = False
            pos = next_pos
            continue
        first = False
        if line[:1] in (b" ", b"\t"):
            if fields:
                field = fields[-1]
                field[2] += len(line)
                field[4] = next_pos
                if field[2] <= limits.max_field_bytes:
                    field[1].append(line)
                elif not malformed:
                    malformed = f"header field over {limits.max_field_bytes} bytes"
            else:
                defects.append("continuation-without-field")
            pos = next_pos
            continue
        if (fields and fields[-1][0].lower() in _PARAMETRIC
                and fields[-1][1][-1].rstrip().endswith(b";")
                and _PARAM_LINE.match(line)):
            defects.append("unindented-continuation: "
                           + fields[-1][0].decode("ascii", "replace"))
            malformed = malformed or "unindented header continuation"
            fields[-1][1].append(b" " + line)
            fields[-1][4] = next_pos
            pos = next_pos
            continue
        name = field_name(line)
        if name is None:
            if ends_block(buf, next_pos, end):
                defects.append("junk-header-line")
                junk.append((pos, next_pos))
                pos = next_pos
                continue
            defects.append("missing-header-separator")
            body_start = pos
            break
        if len(fields) >= limits.max_header_fields:
            malformed = f"more than {limits.max_header_fields} header fields"
            body_start = pos
            break
        value = line[line.find(b":") + 1:]
        if len(value) > limits.max_field_bytes:
            malformed = malformed or (
                f"header field over {limits.max_field_bytes} bytes")
            value = value[:limits.max_field_bytes]
        fields.append([name, [value], len(line), pos, next_pos])
        pos = next_pos
    # One entry per kind of defect: a block of junk lines must not turn
    # into a list as long as the block.
    defects = list(dict.fromkeys(defects))[:20]
    return Block([(f[0].decode("ascii"), b"".join(f[1])) for f in fields],
                 body_start, defects, malformed,
                 spans=[(f[3], f[4]) for f in fields], junk=junk)


def ends_block(buf: bytes, pos: int, end: int) -> bool:
    """Whether the line at ``pos`` is blank or a header field."""
    nl = buf.find(b"\n", pos, min(end, pos + 1000))
    line = buf[pos:nl if nl >= 0 else min(end, pos + 1000)].rstrip(b"\r")
    return not line or field_name(line) is not None


def raw_text(raw: bytes) -> str:
    """A field value as text with encoded words left alone (for parsers)."""
    text = _as_text(raw)
    if "\r" in text or "\n" in text:
        text = text.replace("\r", " ").replace("\n", " ")
    return text.replace("\x00", "\ufffd").strip()


def decode_value(raw: bytes) -> tuple[str, list[str]]:
    """A field value for reading: unfolded, charset-decoded, RFC 2047 decoded.

    Raw 8-bit values are read as UTF-8 (RFC 6532) and, where that fails,
    byte by byte as windows-1252; NUL becomes U+FFFD (it would truncate in C
    code and databases further on).
    """
    text = _as_text(raw)
    if "\r" in text or "\n" in text:
        text = text.replace("\r", " ").replace("\n", " ")
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    text, defects = words.decode_words(text.strip())
    return text, defects


def _as_text(raw: bytes) -> str:
    # Most values are plain ASCII: no codec error handler, no surrogate scan.
    if raw.isascii():
        return raw.decode("ascii")
    return charsets.decode(raw, "utf-8")[0]
