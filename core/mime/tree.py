"""A message's bytes into a ParsedMessage: an explicit stack, no recursion.

Entities are offsets into the message (or into a decoded message/rfc822
body), so nothing is copied until a leaf is decoded. Multipart bodies are
split by our own delimiter search (RFC 2046 5.1.1), linear in the body and
bounded by the depth limit, instead of the stdlib parser, which recurses
(RecursionError at ~1000 levels, case 034) and re-folds headers when
serialised (cases 035, 060, 061).

Uuencoded files inside text/plain bodies become parts of their own
(``<path>.uu1``, defect uuencoded-in-text), as old clients attach files.

Limits: message/partial fragments are not reassembled; BinHex and yEnc
are not decoded; preamble and epilogue text is not a part (clamd still scans it
in the raw message).
"""

from __future__ import annotations

import dataclasses
import logging
import re

from core.logsetup import scrub
from core.message import ParsedMessage, Part
from core.mime import charsets, headers, params, sniff, transfer
from core.mime.addresses import AddressError, parse_mailbox_list
from core.mime.limits import DEFAULT, Limits

log = logging.getLogger(__name__)

_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+*-]+")
_TEXT_TYPES = ("text/plain", "text/html")
# RFC 5322 3.6: fields that may appear at most once.
_SINGLE = ("date", "sender", "reply-to", "to", "cc", "bcc", "message-id",
           "in-reply-to", "references")
_MAX_DEFECTS = 100
# A From field of a hundred addresses fits; the address scanner is
# character by character, so longer ones are refused before it runs.
_MAX_FROM = 16 * 1024
# uuencoded files inside one text part (a "begin 644 name" line each).
_UU_BEGIN = re.compile(rb"(?m)^begin [0-7]{3,4} ([^\r\n]{1,1000})\r?$")
_MAX_UU = 20


@dataclasses.dataclass
class _Entity:
    buf: bytes
    start: int
    end: int
    depth: int
    path: str
    in_rfc822: bool
    default_type: str
    top: bool = False


class _State:
    def __init__(self, msg: ParsedMessage, limits: Limits):
        self.msg = msg
        self.limits = limits
        self.entities = 1
        self.decoded = 0
        self.text = 0
        self.nested = 0
        self.stop = False
        self.reasons: list[str] = []
        self.top_fields: list[tuple[str, bytes]] = []

    def defect(self, text: str) -> None:
        defects = self.msg.defects
        if text not in defects and len(defects) < _MAX_DEFECTS:
            defects.append(text)

    def malformed(self, reason: str) -> None:
        if reason not in self.reasons:
            self.reasons.append(reason)
        self.msg.malformed = True
        self.msg.malformed_reason = "; ".join(self.reasons)[:500]


def parse(data: bytes, limits: Limits = DEFAULT, qid: str = "-") -> ParsedMessage:
    """The parsed message; never raises, malformed=True when it had to give up."""
    if not isinstance(data, bytes):
        data = bytes(data)
    msg = ParsedMessage(size=len(data))
    state = _State(msg, limits)
    try:
        _parse(data, state)
    except Exception as exc:  # the contract: any input gives a result
        log.warning("%s event=mime-error error=%s", qid, scrub(repr(exc)))
        state.malformed(f"parser error: {type(exc).__name__}")
    return msg


def _parse(data: bytes, st: _State) -> None:
    _line_ends(data, st)
    stack = [_Entity(data, 0, len(data), 0, "", False, "text/plain", top=True)]
    while stack and not st.stop:
        _entity(stack.pop(), stack, st)
    if stack:
        st.malformed(f"parts left unparsed: {len(stack)}")
    if st.nested:
        st.defect(f"nested-message: {st.nested} message/rfc822 part(s)")
    _message_fields(st)


def _line_ends(data: bytes, st: _State) -> None:
    nuls = data.count(b"\x00")
    if nuls:
        st.defect(f"nul-bytes: {nuls}")
    crlf = data.count(b"\r\n")
    lf = data.count(b"\n")
    cr = data.count(b"\r")
    if crlf and lf != crlf:
        st.defect(f"bare-lf: {lf - crlf}")
    if cr != crlf:
        st.defect(f"bare-cr: {cr - crlf}")


def _text(raw: bytes) -> str:
    return headers.raw_text(raw)


def _first(fields: list[tuple[str, bytes]], name: str) -> list[bytes]:
    return [raw for key, raw in fields if key.lower() == name]


def _entity(ent: _Entity, stack: list[_Entity], st: _State) -> None:
    block = headers.split(ent.buf, ent.start, ent.end, st.limits, top=ent.top)
    if block.malformed:
        st.malformed(block.malformed)
    if ent.top:
        st.top_fields = block.fields
        for name, raw in block.fields:
            value, problems = headers.decode_value(raw)
            st.msg.headers.append((name, value))
            for problem in problems:
                st.defect(f"{problem} in {name}")
        for problem in block.defects:
            st.defect(problem)
    where = f" (part {ent.path or 'top'})"
    notes = [] if ent.top else list(block.defects)

    ctypes = _first(block.fields, "content-type")
    if len(ctypes) > 1:
        st.defect("duplicate-content-type" + where)
        st.malformed("more than one Content-Type")
    head = params.parse(_text(ctypes[0]), st.limits) if ctypes else params.Header()
    if head.malformed:
        st.malformed(head.malformed)
    notes.extend(head.defects)
    ctype = head.value
    if not _TYPE.fullmatch(ctype):
        if ctypes:
            notes.append(f"invalid-content-type: {scrub(ctype, 60)}")
        ctype = ent.default_type

    encodings = {_text(raw).split("(")[0].strip().strip('"').lower()
                 for raw in _first(block.fields, "content-transfer-encoding")}
    if len(encodings) > 1:
        st.defect("conflicting-transfer-encodings" + where)
        st.malformed("more than one Content-Transfer-Encoding")
    cte = min(encodings) if encodings else ""

    if ctype.startswith("multipart/"):
        _multipart(ent, block.body_start, ctype, head, stack, st, notes)
    elif ctype in ("message/rfc822", "message/global"):
        _message(ent, block.body_start, cte, stack, st, notes)
    else:
        _leaf(ent, block, ctype, head, cte, st, notes)


def _too_deep(ent: _Entity, st: _State) -> bool:
    if ent.depth < st.limits.max_depth:
        return False
    st.malformed(f"nesting deeper than {st.limits.max_depth} levels")
    return True


def _room(st: _State, wanted: int) -> int:
    """How many more entities the part limit allows, marking when it bites."""
    left = st.limits.max_parts - st.entities
    if wanted > left:
        # The parts already counted are still parsed; nothing more is added.
        st.malformed(f"more than {st.limits.max_parts} parts")
        wanted = max(left, 0)
    st.entities += wanted
    return wanted


def _multipart(ent: _Entity, body: int, ctype: str, head: params.Header,
               stack: list[_Entity], st: _State, notes: list[str]) -> None:
    where = f" (part {ent.path or 'top'})"
    for note in notes:
        st.defect(note + where)
    if _too_deep(ent, st):
        return
    declared = head.params.get("boundary", [])
    boundaries = [b for b in dict.fromkeys(declared) if b]
    if len(declared) > 1:
        st.defect("duplicate-boundary" + where)
    if len(boundaries) > 1:
        # Scanner and client may each pick another one (ClamAV CLAM-2947):
        # split by every value so no reading goes unseen, and refuse to
        # call the result clean.
        st.malformed(f"ambiguous boundary: {len(boundaries)} values")
    if not boundaries:
        st.defect("multipart-without-boundary" + where)
        st.malformed("multipart without boundary")
        _opaque(ent, body, ctype, st)
        return

    ranges: list[tuple[int, int]] = []
    for boundary in boundaries[:st.limits.max_boundaries]:
        found, closed = split_multipart(ent.buf, body, ent.end,
                                        boundary.encode("utf-8", "replace"),
                                        st.limits.max_parts + 1)
        if not found:
            st.defect(f"boundary-not-found: {scrub(boundary, 60)}" + where)
            continue
        if closed is False:
            st.defect("missing-close-boundary" + where)
        ranges.extend(found)
    if not ranges:
        st.malformed("boundary not found in the body")
        _opaque(ent, body, ctype, st)
        return

    child_type = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
    allowed = _room(st, len(ranges))
    children = []
    for number, (start, end) in enumerate(ranges[:allowed], 1):
        path = f"{ent.path}.{number}" if ent.path else str(number)
        children.append(_Entity(ent.buf, start, end, ent.depth + 1, path,
                                ent.in_rfc822, child_type))
    stack.extend(reversed(children))


def split_multipart(buf: bytes, start: int, end: int, boundary: bytes,
                    most: int) -> tuple[list[tuple[int, int]], bool | None]:
    """Body ranges of the parts of ``buf[start:end]``, and whether it closed.

    ``None`` instead of a bool: the search stopped after ``most`` parts.

    RFC 2046 5.1.1: a delimiter is ``--boundary`` at the start of a line,
    optionally ``--`` (the last one) and white space; the line end before
    it belongs to the delimiter.
    """
    delimiter = b"--" + boundary
    size = len(delimiter)
    ranges: list[tuple[int, int]] = []
    current = -1
    pos = start
    while True:
        hit = buf.find(delimiter, pos, end)
        if hit < 0:
            break
        pos = hit + size
        if hit != start and buf[hit - 1] != 0x0A:
            continue
        closing = buf.startswith(b"--", pos) and pos + 2 <= end
        rest_start = pos + 2 if closing else pos
        nl = buf.find(b"\n", rest_start, end)
        line_end = end if nl < 0 else nl
        if buf[rest_start:line_end].strip(b" \t\r"):
            continue  # "--boundaryX": a longer boundary, not this one
        if current >= 0:
            stop = hit
            if stop > current and buf[stop - 1] == 0x0A:
                stop -= 1
                if stop > current and buf[stop - 1] == 0x0D:
                    stop -= 1
            ranges.append((current, stop))
            if len(ranges) >= most:
                return ranges, None
        if closing:
            return ranges, True
        current = end if nl < 0 else nl + 1
        pos = current
    if current >= 0:
        ranges.append((current, end))
    return ranges, False


def _message(ent: _Entity, body: int, cte: str, stack: list[_Entity],
             st: _State, notes: list[str]) -> None:
    where = f" (part {ent.path or 'top'})"
    for note in notes:
        st.defect(note + where)
    if _too_deep(ent, st):
        return
    st.nested += 1
    buf, start, end = ent.buf, body, ent.end
    if cte not in transfer.IDENTITY:
        # RFC 2046 5.2.1 forbids encoding message/rfc822, clients decode it.
        st.defect("encoded-message-rfc822" + where)
        if not _budget(st, end - start):
            return
        buf, problems = transfer.decode(buf[start:end], cte)
        start, end = 0, len(buf)
        st.decoded += len(buf)
    if not _room(st, 1):
        return
    path = f"{ent.path}.1" if ent.path else "1"
    stack.append(_Entity(buf, start, end, ent.depth + 1, path, True, "text/plain"))


def _budget(st: _State, size: int) -> bool:
    if st.decoded + size <= st.limits.max_decoded_bytes:
        return True
    st.malformed(f"decoded size over {st.limits.max_decoded_bytes} bytes")
    st.stop = True
    return False


def _opaque(ent: _Entity, body: int, ctype: str, st: _State) -> None:
    """A container that could not be split, kept whole so it is scanned."""
    if not _budget(st, ent.end - body):
        return
    payload = ent.buf[body:ent.end]
    st.decoded += len(payload)
    st.msg.parts.append(Part(path=ent.path, content_type=ctype, payload=payload,
                             detected_type=sniff.sniff(payload),
                             defects=["unsplit-multipart"], depth=ent.depth,
                             in_rfc822=ent.in_rfc822))


def _leaf(ent: _Entity, block: headers.Block, ctype: str, head: params.Header,
          cte: str, st: _State, notes: list[str]) -> None:
    raw = ent.buf[block.body_start:ent.end]
    if not _budget(st, len(raw)):
        return
    payload, problems = transfer.decode(raw, cte)
    st.decoded += len(payload)
    notes.extend(problems)

    dispositions = _first(block.fields, "content-disposition")
    disp = params.parse(_text(dispositions[0]), st.limits) \
        if dispositions else params.Header()
    if disp.malformed:
        st.malformed(disp.malformed)
    notes.extend(disp.defects)
    disposition = disp.value
    if disposition not in ("", "inline", "attachment"):
        # RFC 2183 2.8: an unknown disposition is treated as attachment.
        notes.append(f"unknown-disposition: {scrub(disposition, 40)}")
        disposition = "attachment"

    names = disp.params.get("filename", []) + head.params.get("name", [])
    filenames = list(dict.fromkeys(n for n in names if n))
    if len(filenames) > 1:
        notes.append("filenames-differ")
    cd_names = [n for n in disp.params.get("filename", []) if n]
    ct_names = [n for n in head.params.get("name", []) if n]
    filename = (cd_names or ct_names or [""])[-1]

    detected = sniff.sniff(payload)
    if detected and sniff.mismatch(ctype, detected):
        notes.append(f"type-mismatch: declared {scrub(ctype, 60)}, "
                     f"detected {detected}")
    charset = head.get("charset")
    part = Part(path=ent.path, content_type=ctype, detected_type=detected,
                charset=charset[:40], filename=filename,
                disposition=disposition, payload=payload, depth=ent.depth,
                in_rfc822=ent.in_rfc822, filenames=filenames,
                transfer_encoding=cte[:40])
    if ctype in _TEXT_TYPES:
        part.text = _leaf_text(payload, charset, st, notes)
    if ctype.startswith("text/") and b"\x00" in payload:
        notes.append("nul-bytes")
    part.defects = list(dict.fromkeys(notes))[:20]
    st.msg.parts.append(part)
    if ctype == "text/plain" and b"begin " in payload:
        _uuencoded(ent, payload, st)


def _uuencoded(ent: _Entity, payload: bytes, st: _State) -> None:
    """Files uuencoded inside a text body, as old clients send attachments."""
    for number, match in enumerate(_UU_BEGIN.finditer(payload), 1):
        if number > _MAX_UU or not _room(st, 1):
            break
        stop = payload.find(b"\nend", match.end())
        block = payload[match.start():len(payload) if stop < 0 else stop + 5]
        if not _budget(st, len(block)):
            return
        data, problems = transfer.decode_uu(block)
        st.decoded += len(data)
        name, _ = charsets.decode(match.group(1).strip(), "utf-8")
        path = f"{ent.path}.uu{number}" if ent.path else f"uu{number}"
        st.msg.parts.append(Part(
            path=path, content_type="application/octet-stream",
            detected_type=sniff.sniff(data), filename=name[:1000],
            disposition="attachment", payload=data, depth=ent.depth + 1,
            in_rfc822=ent.in_rfc822, filenames=[name[:1000]],
            transfer_encoding="x-uuencode",
            defects=["uuencoded-in-text", *problems]))


def _leaf_text(payload: bytes, charset: str, st: _State, notes: list[str]) -> str:
    room = min(st.limits.max_text_chars, st.limits.max_total_text - st.text)
    if room <= 0:
        notes.append("text-not-decoded: message text limit reached")
        return ""
    # A character is at most 4 bytes in any charset we decode.
    text, problem = charsets.decode(payload[:room * 4], charset or "us-ascii")
    if problem:
        notes.append(problem)
    if len(text) > room or len(payload) > room * 4:
        text = text[:room]
        notes.append("text-truncated")
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    st.text += len(text)
    return text


def _message_fields(st: _State) -> None:
    msg = st.msg
    fields = [(name.lower(), value) for name, value in msg.headers]
    counts: dict[str, int] = {}
    for name, _ in fields:
        counts[name] = counts.get(name, 0) + 1

    froms = counts.get("from", 0)
    if not froms:
        st.defect("no-from")
    if froms > 1:
        # RFC 5322 3.6: exactly one From. Checks keyed on "the" From
        # disagree with what the reader's client shows (OpenDKIM#157).
        st.defect(f"duplicate-from: {froms} From fields")
        st.malformed("more than one From field")
    for raw in _raw_top(st, "from"):
        text = headers.raw_text(raw)
        if len(text) > _MAX_FROM:
            st.defect(f"invalid-from: over {_MAX_FROM} characters")
            continue
        try:
            msg.from_addresses.extend(parse_mailbox_list(text))
        except AddressError as exc:
            st.defect(f"invalid-from: {exc}: {scrub(text, 120)}")
    msg.from_addresses = list(dict.fromkeys(msg.from_addresses))

    subjects = msg.header_values("subject")
    msg.subject = subjects[0] if subjects else ""
    if len(subjects) > 1:
        st.defect(f"duplicate-subject: {len(subjects)} Subject fields")
    ids = msg.header_values("message-id")
    msg.message_id = ids[0][:998] if ids else ""
    for name in _SINGLE:
        if counts.get(name, 0) > 1:
            st.defect(f"duplicate-header: {name}")


def _raw_top(st: _State, name: str) -> list[bytes]:
    return [raw for key, raw in st.top_fields if key.lower() == name]
