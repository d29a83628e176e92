"""What of a parsed message the Bayesian filter looks at, as token segments.

Both tokenizers share this step: it picks header fields, bodies,
attachment names and a few HTML features from a ``ParsedMessage`` and hands
them on as ``(prefix, data, mode)`` segments (see ``core.spam.tokenspec``).
Header tokens come first, so a huge body cannot crowd them out of the
per-message token cap.

Limits: every segment is cut at ``MAX_SEGMENT`` bytes (a long body text is
read as its start and its last ``TAIL_CHARS`` characters), at most
``MAX_HEADERS`` header fields, ``MAX_RECEIVED`` Received hops and
``MAX_PARTS`` parts are looked at, and the HTML feature scan reads only the
first ``MAX_HTML_SCAN`` characters of each HTML part.
"""

from __future__ import annotations

import re

from core.message import ParsedMessage
from core.spam.tokenspec import HTML, INVISIBLE, LITERAL, WORDS

MAX_SEGMENT = 200_000
MAX_HEADERS = 100
MAX_RECEIVED = 4
MAX_PARTS = 50
MAX_HTML_SCAN = 100_000
MAX_LINKS = 50
# Texts longer than LONG_TEXT characters are read as two segments, the second
# their last TAIL_CHARS (see text_segments).
LONG_TEXT = 48_000
TAIL_CHARS = 16_000

# Header fields whose words are tokens, prefixed with the field name.
WORD_HEADERS = frozenset((
    "subject", "from", "to", "cc", "reply-to", "sender", "x-mailer",
    "user-agent", "organization", "content-disposition", "return-path",
))
# Header fields whose whole (short) value is one token.
LITERAL_HEADERS = frozenset((
    "x-mailer", "user-agent", "precedence", "mime-version",
    "content-transfer-encoding", "x-priority", "x-msmail-priority",
    "importance",
))
# Our own verdict fields (and those of other filters) say nothing the filter
# should learn from: it would only learn to trust them.
SKIP_PREFIXES = ("x-spam", "x-bogosity", "x-portcullis", "x-virus")
# Fields a mail client or a local mailbox writes after delivery (read and
# flagged state, folder keywords, mbox lengths). Mail never has them when it
# reaches the gateway, but mailboxes given to ``bayes train`` do, differently
# in a ham folder than in a spam folder: learnt, they would teach the filter
# which folder a message came from.
MAILBOX_FIELDS = frozenset((
    "status", "x-status", "x-keywords", "x-uid", "x-imap", "x-imapbase",
    "x-mozilla-status", "x-mozilla-status2", "x-mozilla-keys", "content-length",
    "lines",
))
# Attachments whose content is a web page: mail clients show these, so
# spammers send their text that way.
HTML_EXTENSIONS = ("htm", "html", "xhtml")

# The shape of a Message-ID: each run of digits, lower or upper case ASCII
# letters becomes one "9", "a" or "A" (map every character, then fold runs).
_SHAPE_MAP = str.maketrans(
    {**{c: "9" for c in "0123456789"},
     **{c: "a" for c in "abcdefghijklmnopqrstuvwxyz"},
     **{c: "A" for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}})
# One pattern per class with a literal replacement: a template such as
# r"\1" is expanded in Python for every match, which costs more than the scan.
_SHAPE_RUNS = ((re.compile("99+"), "9"), (re.compile("aa+"), "a"),
               (re.compile("AA+"), "A"))
# "<" is excluded inside a tag so a run of "<" costs linear time.
_TAG_RE = re.compile(r"<[^<>]{0,4000}>|&[a-z#0-9]{1,10};", re.I)
_TEXTWORD_RE = re.compile(r"[^\W_]{2,}")
_URL_HOST_RE = re.compile(
    r"^(?:[a-z][a-z0-9+.-]{0,15}:)?/*(?:[^@/?#\s]*@)?([^/?#:\s]+)")
_TEXT_HOST_RE = re.compile(r"(?:https?://)?((?:[a-z0-9-]{1,63}\.)+[a-z]{2,24})\b")
# Dotted names and addresses in a Received field (ASCII only, as DNS is).
# Starts only at a word start and never backtracks: linear in the field.
_RCVD_WORD = re.compile(r"(?<![a-z0-9@_.-])[a-z0-9][a-z0-9@_-]*+(?:\.[a-z0-9_-]++)+")
_CHARSET_RE = re.compile(r"charset\s*=\s*\"?([^\";\s]{1,40})", re.I)
_HIDDEN = ("display:none", "visibility:hidden", "font-size:0", "font-size:1px",
           "size=0", "size=\"0\"", "size=1>", "size=\"1\"")


# Characters a mail client draws as nothing (tokenspec.INVISIBLE, which the
# tokenizers' entity decoding uses too). Put inside a word they cut it into
# pieces training never saw: a held spam scored 0.99999999 went to 0.69
# with U+200B between its letters.
_INVISIBLE_RE = re.compile("[" + "".join(
    f"{chr(first)}-{chr(last)}" if last > first else chr(first)
    for first, last in INVISIBLE) + "]")


# Cyrillic, Greek and fullwidth letters drawn like Latin ones, as Latin:
# "vіаgrа" with Cyrillic і and а reads as viagra but shares no token with
# it (a held spam went from 0.99999988 to 0.94, delivered untagged). Text
# really written in those scripts is folded alike in training and scoring,
# so its words still match each other.
_LOOKALIKES = str.maketrans(
    # Cyrillic
    "\u0430\u0435\u043e\u0440\u0441\u0443\u0445\u0456\u0458\u0455\u0501"
    "\u04bb\u051b\u051d\u0410\u0412\u0415\u041a\u041c\u041d\u041e\u0420"
    "\u0421\u0422\u0425\u0406\u0408\u0405\u050c"
    # Greek
    "\u03b1\u03bf\u03c1\u03bd\u03b9\u03c5\u03ba\u03c4\u03c7\u0391\u0392"
    "\u0395\u0396\u0397\u0399\u039a\u039c\u039d\u039f\u03a1\u03a4\u03a5"
    "\u03a7",
    "aeopcyxijsdhqwABEKMHOPCTXIJSG"
    "aopviuktxABEZHIKMNOPTYX")
_LOOKALIKES.update({code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)})
# Finds whether there is anything to drop or fold, in one scan in C: most
# non-ASCII text has neither, and translate looks up every character (0.05
# ms a message on the corpus where this scan costs a few microseconds).
_CHANGED_RE = re.compile(_INVISIBLE_RE.pattern[:-1] + "".join(
    chr(code) for code in sorted(_LOOKALIKES)) + "]")


def visible(text: str) -> str:
    """``text`` as a reader sees it: without the characters drawn as
    nothing, and with look-alike letters of other scripts as Latin ones."""
    if text.isascii() or not _CHANGED_RE.search(text):
        return text
    return _INVISIBLE_RE.sub("", text).translate(_LOOKALIKES)


def _enc(text: str, clean=visible) -> bytes:
    return clean(text[:MAX_SEGMENT]).encode("utf-8", "surrogatepass")


def _shape(value: str) -> str:
    value = value.translate(_SHAPE_MAP)
    for run, one in _SHAPE_RUNS:
        value = run.sub(one, value)
    return value


def _hop_word(word: str) -> tuple:
    """The segments of one host name or IP address of a Received hop."""
    data = word.encode()
    dots = word.count(".")
    # Labels are never empty, so "digits once the dots are gone" means
    # every label is a number.
    if dots == 3 and word.replace(".", "").isdigit():
        return ((b"rcvd:ip:", data, LITERAL),
                (b"rcvd:ip24:", data[:data.rfind(b".")], LITERAL))
    if dots > 1:
        return ((b"rcvd:host:", data, LITERAL),
                (b"rcvd:dom:", data[data.rfind(b".", 0, data.rfind(b".")) + 1:],
                 LITERAL))
    return ((b"rcvd:host:", data, LITERAL),)


# The relays of a site recur in message after message, so the segments of a
# hop word are kept once made (bounded: the words are the sender's).
_HOP_WORDS: dict[str, tuple] = {}
MAX_HOP_WORDS = 20000


def _received(value: str, out: list) -> None:
    """Hosts and IP addresses (with their /24) of one Received hop."""
    head = value[:1000].lower().partition(";")[0]
    extend = out.extend
    known = _HOP_WORDS
    for word in _RCVD_WORD.findall(head)[:12]:
        made = known.get(word)
        if made is None:
            made = _hop_word(word)
            if len(known) < MAX_HOP_WORDS:
                known[word] = made
        extend(made)


def _message_id(value: str, out: list) -> None:
    value = value.strip()[:200]
    out.append((b"mid:shape:", _shape(value).encode(), LITERAL))
    _, at, domain = value.rpartition("@")
    if at:
        out.append((b"mid:dom:", domain.strip("<> ").lower().encode(), LITERAL))
    else:
        out.append((b"mid:", b"noat", LITERAL))


def _content_type(value: str, out: list, prefix: bytes) -> None:
    main, _, params = value.partition(";")
    out.append((prefix, main.strip().lower()[:64].encode(), LITERAL))
    match = _CHARSET_RE.search(params[:2000])
    if match:
        out.append((b"charset:", match.group(1).lower().encode(), LITERAL))


_RECEIVED, _MESSAGE_ID, _CONTENT_TYPE = 1, 2, 3
_KINDS = {"received": _RECEIVED, "message-id": _MESSAGE_ID,
          "content-type": _CONTENT_TYPE}
# Field names repeat from message to message, so what a name asks for is
# worked out once per name as written (bounded: names are the sender's).
_PLANS: dict[str, tuple] = {}
MAX_PLANS = 4096
MAX_PLAN_NAME = 64


def skipped_field(key: str) -> bool:
    """Whether the header field ``key`` (lowercased) is no evidence: another
    filter's verdict or what a mail client wrote after delivery."""
    return key.startswith(SKIP_PREFIXES) or key in MAILBOX_FIELDS


def _plan(name: str) -> tuple:
    """(key, hdr token, word prefix, literal prefix, kind); () to skip."""
    key = name.lower().strip()
    if skipped_field(key):
        plan: tuple = ()
    else:
        plan = (key, key[:40].encode("utf-8", "replace"),
                key.encode() + b":" if key in WORD_HEADERS else None,
                key.encode() + b"=" if key in LITERAL_HEADERS else None,
                _KINDS.get(key, 0))
    if len(_PLANS) < MAX_PLANS and len(name) <= MAX_PLAN_NAME:
        _PLANS[name] = plan
    return plan


def header_segments(parsed: ParsedMessage, out: list) -> None:
    received = 0
    names_seen = set()
    append = out.append
    plans = _PLANS
    for name, value in parsed.headers[:MAX_HEADERS]:
        plan = plans.get(name)
        if plan is None:
            plan = _plan(name)
        if not plan:
            continue
        key, hdr, word, literal, kind = plan
        value = value or ""
        if key not in names_seen:
            names_seen.add(key)
            append((b"hdr:", hdr, LITERAL))

        if word is not None:
            append((word, _enc(value[:2000]), WORDS))
        if literal is not None:
            append((literal, _enc(value.strip()[:64]), LITERAL))
        if not kind:
            continue
        if kind == _RECEIVED:
            if received < MAX_RECEIVED:
                received += 1
                _received(value, out)
        elif kind == _MESSAGE_ID:
            _message_id(value, out)
        else:
            _content_type(value, out, b"content-type:")

    count = len(parsed.from_addresses)
    if count != 1:
        out.append((b"from:count:", str(min(count, 3)).encode(), LITERAL))
    if parsed.malformed:
        out.append((b"mime:", b"malformed", LITERAL))
    for defect in parsed.defects[:10]:
        out.append((b"defect:", defect[:40].encode("utf-8", "replace"), LITERAL))


# Header fields only mailing-list software adds (RFC 2369, RFC 2919, and
# the older ezmlm and SmartList names).
LIST_FIELDS = frozenset(("list-id", "list-post", "list-unsubscribe",
                         "mailing-list", "x-mailing-list"))


def is_list_mail(parsed: ParsedMessage) -> bool:
    """Whether ``parsed`` came through a mailing list (by its header)."""
    for name, value in parsed.headers[:MAX_HEADERS]:
        key = name.lower()
        if key in LIST_FIELDS:
            return True
        if key == "precedence" and "list" in (value or "").lower():
            return True
    return False


def _anchors(low: str):
    """(href, text) of the first MAX_LINKS anchors of lowercased HTML."""
    pos = 0
    for _ in range(MAX_LINKS):
        pos = low.find("<a ", pos)
        if pos < 0:
            return
        close = low.find(">", pos, pos + 2000)
        if close < 0:
            return
        tag = low[pos:close]
        pos = close
        at = tag.find("href")
        if at < 0:
            continue
        value = tag[at + 4:].lstrip(" =\"'")
        href = value.split(None, 1)[0].rstrip("\"'") if value.strip() else ""
        end = low.find("<", close, close + 300)
        yield href, low[close + 1:end if end >= 0 else close + 300]


def html_features(html: str, out: list) -> None:
    """Hidden text, image-only bodies, link text naming another host."""
    low = html[:MAX_HTML_SCAN].lower()
    compact = low.replace(" ", "")
    if any(mark in compact for mark in _HIDDEN):
        out.append((b"html:", b"hidden", LITERAL))
    images = low.count("<img")
    if images:
        text = _TAG_RE.sub(" ", low[:50000])
        words = len(_TEXTWORD_RE.findall(text))
        if words < 20:
            out.append((b"html:", b"imageonly", LITERAL))
        out.append((b"html:images:", str(min(images, 5)).encode(), LITERAL))

    for href, shown in _anchors(low):
        host = _URL_HOST_RE.match(href)
        named = _TEXT_HOST_RE.search(shown) if "." in shown else None
        if not host or not named:
            continue
        target = host.group(1).rstrip(".")
        named = named.group(1).rstrip(".")
        if not (target == named or target.endswith("." + named)
                or named.endswith("." + target)):
            out.append((b"html:", b"linkmismatch", LITERAL))
            break


def text_segments(text: str, mode: int, out: list, clean=visible) -> None:
    """One body text as segments: a long one as its start and its end.

    The token budget is shared fairly between text segments, so the last
    ``TAIL_CHARS`` of a long text are read whatever fills its start: padding
    put before the words that matter cannot push them out of reach.
    """
    if len(text) <= LONG_TEXT:
        out.append((b"", _enc(text, clean), mode))
        return

    cut = len(text) - TAIL_CHARS
    # At a tag's end or a space, so that no tag or word is cut in two.
    at = text.find(">" if mode == HTML else " ", cut, cut + 2000)
    if at >= 0:
        cut = at + 1
    out.append((b"", _enc(text[:cut], clean), mode))
    out.append((b"", _enc(text[cut:], clean), mode))


def _decode(payload: bytes, charset: str) -> str:
    try:
        return payload[:MAX_SEGMENT].decode(charset or "utf-8", "replace")
    except LookupError:  # a charset name Python does not know
        return payload[:MAX_SEGMENT].decode("latin-1")


def part_text(part) -> tuple[str | None, bool]:
    """(the text the filter reads of ``part`` or None, whether it is HTML).

    Beyond text parts, also a web page sent as an attachment and the body of
    a multipart whose boundary never occurs (the MIME layer could not split
    it, but clients show such a body as text): both hide a message's words
    from a filter that reads only well-formed text parts.
    """
    ctype = (part.content_type or "").lower()
    if part.text is not None:
        return part.text, ctype == "text/html"
    if not part.payload:
        return None, False
    if "unsplit-multipart" in part.defects:
        return _decode(part.payload, part.charset), True
    ext = part.filename.rpartition(".")[2].lower() if "." in part.filename else ""
    if part.detected_type == "text/html" or ext in HTML_EXTENSIONS:
        return _decode(part.payload, part.charset), True
    return None, False


def body_segments(parsed: ParsedMessage, out: list, html=html_features,
                  clean=visible) -> None:
    """The body segments of ``parsed``, appended to ``out``; ``html`` gives
    the HTML features and ``clean`` does what ``visible`` does (the compiled
    feature step passes its own of both)."""
    for part in parsed.parts[:MAX_PARTS]:
        ctype = (part.content_type or "").lower()
        out.append((b"part:", ctype[:64].encode(), LITERAL))
        if part.charset:
            out.append((b"part:charset:", part.charset.lower()[:40].encode(), LITERAL))
        if part.filename or part.disposition == "attachment":
            name = part.filename[:200]
            out.append((b"filename:", _enc(name, clean), WORDS))
            _, dot, ext = name.rpartition(".")
            if dot:
                out.append((b"att:ext:", _enc(ext[:16].lower(), clean), LITERAL))
            out.append((b"att:type:", ctype[:64].encode(), LITERAL))
            if part.detected_type and part.detected_type != ctype:
                out.append((b"att:real:", part.detected_type[:64].encode(), LITERAL))
        text, is_html = part_text(part)
        if text is None:
            continue
        if is_html:
            html(text, out)
        text_segments(text, HTML if is_html else WORDS, out, clean)


def segments(parsed: ParsedMessage) -> list[tuple[bytes, bytes, int]]:
    """The token segments of ``parsed``, headers first."""
    out: list[tuple[bytes, bytes, int]] = []
    header_segments(parsed, out)
    body_segments(parsed, out)
    return out


# Header segments the sender writes, as against those relays and mailing
# lists add: who it is from and replies go to, the subject, the shape and
# domain of the Message-ID, the mail program, the content type and charset,
# and what is malformed. ``mix`` scores them once more on their own (the
# author voice), so that relay and list fields cannot drown them.
AUTHOR_PREFIXES = (b"from:", b"reply-to:", b"subject:", b"mid:", b"x-mailer:",
                   b"content-type:", b"charset:", b"mime-version=", b"defect:")


def author(head: list) -> list:
    """The segments of ``head`` (from ``parts``) the sender wrote."""
    return [segment for segment in head if segment[0].startswith(AUTHOR_PREFIXES)]


def parts(parsed: ParsedMessage) -> tuple[list, list]:
    """The header segments and the body segments of ``parsed``, apart."""
    head: list[tuple[bytes, bytes, int]] = []
    body: list[tuple[bytes, bytes, int]] = []
    header_segments(parsed, head)
    body_segments(parsed, body)
    return head, body
