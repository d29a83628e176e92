"""Compiled feature step: a parsed message to token segments.

Private: ``core.spam.tokenizer`` routes the compiled tokenizer here. Each
step gives exactly what ``core/spam/features.py`` (the twin) gives, in the
same order; the tests compare both on the cases and the corpus. The header
loop, the Received host scan, the Message-ID shape and the text-word count
of image-bearing HTML run as C loops instead of regular expressions.

Limits: those of the twin. HTML holding a non-ASCII character where an
entity name is scanned goes through the twin's expressions, as case-blind
matching of such characters is the regex engine's to decide.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t

from core.spam import features as _py
from core.spam.tokenspec import HTML as _HTML_MODE
from core.spam.tokenspec import LITERAL as _LITERAL_MODE
from core.spam.tokenspec import WORDS as _WORDS_MODE

cdef extern from "Python.h":
    int PyUnicode_KIND(object)
    void *PyUnicode_DATA(object)
    Py_UCS4 PyUnicode_READ(int kind, void *data, Py_ssize_t index) nogil
    object PyUnicode_FromKindAndData(int kind, const void *buffer,
                                     Py_ssize_t size)
    bint Py_UNICODE_ISALNUM(Py_UCS4 ch) nogil
    int PyUnicode_4BYTE_KIND
    bint PyUnicode_IS_ASCII(object)

cdef Py_ssize_t MAX_SEGMENT = _py.MAX_SEGMENT
cdef Py_ssize_t MAX_HEADERS = _py.MAX_HEADERS
cdef int MAX_RECEIVED = _py.MAX_RECEIVED
cdef Py_ssize_t MAX_PARTS = _py.MAX_PARTS
cdef Py_ssize_t MAX_HTML_SCAN = _py.MAX_HTML_SCAN
cdef int MAX_LINKS = _py.MAX_LINKS
cdef Py_ssize_t MAX_HOP_WORDS = _py.MAX_HOP_WORDS
cdef Py_ssize_t MAX_PLANS = _py.MAX_PLANS
cdef Py_ssize_t MAX_PLAN_NAME = _py.MAX_PLAN_NAME

cdef object LITERAL = _LITERAL_MODE
cdef object WORDS = _WORDS_MODE
cdef object HTML = _HTML_MODE
cdef tuple _HIDDEN = tuple(_py._HIDDEN)
cdef object _CHARSET_RE = _py._CHARSET_RE

# Received words: at most this many per hop, as the twin's findall()[:12].
cdef enum:
    _HOP_LIMIT = 12
    # The twin strips and cuts a Message-ID to 200 characters before shaping.
    _MID_LIMIT = 200
    # The twin counts words only to compare with 20.
    _FEW_WORDS = 20

# Our own caches: what is kept changes no result, only the speed.
cdef dict _PLANS = {}
cdef dict _HOP_WORDS = {}


cdef inline bint _rcvd_body(Py_UCS4 c) noexcept nogil:
    # [a-z0-9_-]
    return (97 <= c <= 122) or (48 <= c <= 57) or c == 95 or c == 45


cdef inline bint _rcvd_start(Py_UCS4 c) noexcept nogil:
    # [a-z0-9]
    return (97 <= c <= 122) or (48 <= c <= 57)


cdef inline bint _rcvd_behind(Py_UCS4 c) noexcept nogil:
    # [a-z0-9@_.-]: a word never starts right after one of these.
    return _rcvd_body(c) or c == 64 or c == 46


cdef object _visible = _py.visible


cdef bint _may_change(object text):
    # Whether features.visible may change ``text``: a C loop over a superset
    # of the characters it drops or folds, since a regex scan cost more than
    # the rest of the feature step on non-ASCII mail. Of those characters
    # only the soft hyphen is below U+0100.
    cdef int kind = PyUnicode_KIND(text)
    cdef void *data = PyUnicode_DATA(text)
    cdef Py_ssize_t i
    cdef Py_UCS4 c
    if PyUnicode_IS_ASCII(text):
        return False
    if kind == 1:
        return "\xad" in text
    for i in range(len(text)):
        c = PyUnicode_READ(kind, data, i)
        if c < 0x34F:
            if c == 0xAD:
                return True
            continue
        if (c <= 0x61C or 0x115F <= c <= 0x180F or 0x200B <= c <= 0x206F
                or c == 0x3164 or 0xFE00 <= c <= 0xFFF8 or c >= 0x1BCA0):
            return True
    return False


def clean(text):
    """What features.visible gives, found faster."""
    return _visible(text) if _may_change(text) else text


cdef inline bytes _enc(object text):
    text = text[:MAX_SEGMENT]
    if _may_change(text):
        text = _visible(text)
    return text.encode("utf-8", "surrogatepass")


cdef int _received(object value, list out) except -1:
    """Hosts and IP addresses (with their /24) of one Received hop."""
    cdef object head = value[:1000].lower().partition(";")[0]
    if type(head) is not str:
        # Not text: the twin decides (it raises as the expression would).
        _py._received(value, out)
        return 0
    cdef int kind = PyUnicode_KIND(head)
    cdef void *data = PyUnicode_DATA(head)
    cdef Py_ssize_t n = len(head)
    cdef Py_ssize_t i = 0
    cdef Py_ssize_t j
    cdef int found = 0
    cdef int groups
    cdef Py_UCS4 c
    cdef dict known = _HOP_WORDS
    while i < n and found < _HOP_LIMIT:
        c = PyUnicode_READ(kind, data, i)
        if not _rcvd_start(c) or (
                i > 0 and _rcvd_behind(PyUnicode_READ(kind, data, i - 1))):
            i += 1
            continue

        # [a-z0-9@_-]*+ then (\.[a-z0-9_-]++)+, both without backtracking.
        j = i + 1
        while j < n:
            c = PyUnicode_READ(kind, data, j)
            if not (_rcvd_body(c) or c == 64):
                break
            j += 1
        groups = 0
        while (j + 1 < n and PyUnicode_READ(kind, data, j) == 46
               and _rcvd_body(PyUnicode_READ(kind, data, j + 1))):
            j += 2
            while j < n and _rcvd_body(PyUnicode_READ(kind, data, j)):
                j += 1
            groups += 1
        if groups == 0:
            i += 1
            continue

        word = head[i:j]
        found += 1
        i = j
        made = known.get(word)
        if made is None:
            made = _py._hop_word(word)
            if len(known) < MAX_HOP_WORDS:
                known[word] = made
        out.extend(made)
    return 0


cdef object _shape(object value):
    """Runs of digits, lower and upper case ASCII letters as one 9, a or A."""
    cdef int kind = PyUnicode_KIND(value)
    cdef void *data = PyUnicode_DATA(value)
    cdef Py_ssize_t n = len(value)
    cdef Py_ssize_t i
    cdef Py_ssize_t m = 0
    cdef Py_UCS4 c
    cdef Py_UCS4 buf[_MID_LIMIT]
    for i in range(n):
        c = PyUnicode_READ(kind, data, i)
        if 48 <= c <= 57:
            c = 57
        elif 97 <= c <= 122:
            c = 97
        elif 65 <= c <= 90:
            c = 65
        else:
            buf[m] = c
            m += 1
            continue
        if m > 0 and buf[m - 1] == c:
            continue
        buf[m] = c
        m += 1
    return PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, buf, m)


cdef int _message_id(object value, list out) except -1:
    value = value.strip()[:_MID_LIMIT]
    if type(value) is not str:
        _py._message_id(value, out)
        return 0
    out.append((b"mid:shape:", _shape(value).encode(), LITERAL))
    _, at, domain = value.rpartition("@")
    if at:
        out.append((b"mid:dom:", domain.strip("<> ").lower().encode(), LITERAL))
    else:
        out.append((b"mid:", b"noat", LITERAL))
    return 0


cdef int _content_type(object value, list out, bytes prefix) except -1:
    main, _, params = value.partition(";")
    out.append((prefix, main.strip().lower()[:64].encode(), LITERAL))
    match = _CHARSET_RE.search(params[:2000])
    if match:
        out.append((b"charset:", match.group(1).lower().encode(), LITERAL))
    return 0


cdef tuple _plan(object name):
    """(key, hdr token, word prefix, literal prefix, kind); () to skip."""
    cdef tuple plan = _py._plan(name)
    if len(_PLANS) < MAX_PLANS and len(name) <= MAX_PLAN_NAME:
        _PLANS[name] = plan
    return plan


def header_segments(parsed, list out):
    """The header segments of ``parsed``, appended to ``out``."""
    cdef int received = 0
    cdef set names_seen = set()
    cdef dict plans = _PLANS
    cdef object plan
    cdef int kind
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
            out.append((b"hdr:", hdr, LITERAL))

        if word is not None:
            out.append((word, _enc(value[:2000]), WORDS))
        if literal is not None:
            out.append((literal, _enc(value.strip()[:64]), LITERAL))
        if kind == 0:
            continue
        if kind == 1:
            if received < MAX_RECEIVED:
                received += 1
                _received(value, out)
        elif kind == 2:
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


cdef inline bint _entity_char(Py_UCS4 c) noexcept nogil:
    # [a-z#0-9] on lowercased text (ASCII; others go to the twin).
    return (97 <= c <= 122) or (48 <= c <= 57) or c == 35


cdef Py_ssize_t _text_words(object low, Py_ssize_t limit):
    """Words of [^\\W_]{2,} (at most _FEW_WORDS) once tags and entities are
    gone from low[:limit], as the twin's _TAG_RE.sub and _TEXTWORD_RE; -1 when
    a non-ASCII character stands where an entity name is scanned."""
    cdef int kind = PyUnicode_KIND(low)
    cdef void *data = PyUnicode_DATA(low)
    cdef Py_ssize_t n = len(low)
    cdef Py_ssize_t i = 0
    cdef Py_ssize_t j, stop
    cdef Py_ssize_t run = 0
    cdef Py_ssize_t words = 0
    cdef Py_UCS4 c
    cdef bint gone
    if n > limit:
        n = limit
    while i < n:
        c = PyUnicode_READ(kind, data, i)
        gone = False
        if c == 60:
            # <[^<>]{0,4000}>
            j = i + 1
            stop = i + 1 + 4000
            if stop > n:
                stop = n
            while j < stop:
                c = PyUnicode_READ(kind, data, j)
                if c == 60 or c == 62:
                    break
                j += 1
            if j < n and PyUnicode_READ(kind, data, j) == 62:
                i = j + 1
                gone = True
            c = 60
        elif c == 38:
            # &[a-z#0-9]{1,10};
            j = i + 1
            while j < n and j - i - 1 < 10:
                c = PyUnicode_READ(kind, data, j)
                if c >= 128:
                    return -1
                if not _entity_char(c):
                    break
                j += 1
            if j < n and j > i + 1 and PyUnicode_READ(kind, data, j) == 59:
                i = j + 1
                gone = True
            elif j < n and j - i - 1 == 10 and PyUnicode_READ(kind, data, j) >= 128:
                return -1
            c = 38
        if gone:
            # The match became a space: it ends a word.
            if run >= 2:
                words += 1
                if words >= _FEW_WORDS:
                    return words
            run = 0
            continue

        if Py_UNICODE_ISALNUM(c):
            run += 1
        else:
            if run >= 2:
                words += 1
                if words >= _FEW_WORDS:
                    return words
            run = 0
        i += 1
    if run >= 2:
        words += 1
    return words


cdef inline bint _host_char(Py_UCS4 c) noexcept nogil:
    # [a-z0-9-]
    return (97 <= c <= 122) or (48 <= c <= 57) or c == 45


cdef bint _may_name_host(object shown):
    """False when shown cannot hold what _TEXT_HOST_RE finds: a label
    character, a dot and two letters in a row."""
    cdef int kind = PyUnicode_KIND(shown)
    cdef void *data = PyUnicode_DATA(shown)
    cdef Py_ssize_t n = len(shown)
    cdef Py_ssize_t i
    cdef Py_UCS4 c
    for i in range(1, n - 2):
        if PyUnicode_READ(kind, data, i) != 46:
            continue
        if not _host_char(PyUnicode_READ(kind, data, i - 1)):
            continue
        c = PyUnicode_READ(kind, data, i + 1)
        if not 97 <= c <= 122:
            continue
        c = PyUnicode_READ(kind, data, i + 2)
        if 97 <= c <= 122:
            return True
    return False


ctypedef fused _char:
    uint8_t
    uint16_t
    uint32_t


cdef bint _mark_at(const _char *data, Py_ssize_t n, Py_ssize_t i,
                   const char *mark) noexcept nogil:
    """Whether mark starts at data[i] once spaces are dropped (as in compact)."""
    cdef Py_ssize_t k = 0
    while mark[k] != 0:
        while i < n and data[i] == 32:
            i += 1
        if i >= n or data[i] != <unsigned char>mark[k]:
            return False
        i += 1
        k += 1
    return True


cdef bint _scan(const _char *data, Py_ssize_t n, Py_ssize_t *images) noexcept nogil:
    """Whether any of the twin's _HIDDEN marks is in data with its spaces
    removed; the number of "<img" in images."""
    cdef Py_ssize_t i
    cdef Py_UCS4 c, nxt
    cdef bint hidden = False
    images[0] = 0
    for i in range(n):
        c = data[i]
        if c > 118 or not _FIRST[c]:
            continue
        if c != 60 and not hidden:
            # Every mark has "i" or "o" second (spaces may come between).
            nxt = data[i + 1] if i + 1 < n else 0
            if nxt != 32 and nxt != (111 if c == 102 else 105):
                continue
        if c == 60:
            if (i + 3 < n and data[i + 1] == 105 and data[i + 2] == 109
                    and data[i + 3] == 103):
                images[0] += 1
        elif hidden:
            continue
        elif c == 100:
            hidden = _mark_at(data, n, i, b"display:none")
        elif c == 118:
            hidden = _mark_at(data, n, i, b"visibility:hidden")
        elif c == 102:
            hidden = (_mark_at(data, n, i, b"font-size:0")
                      or _mark_at(data, n, i, b"font-size:1px"))
        elif c == 115:
            hidden = (_mark_at(data, n, i, b"size=0")
                      or _mark_at(data, n, i, b"size=\"0\"")
                      or _mark_at(data, n, i, b"size=1>")
                      or _mark_at(data, n, i, b"size=\"1\""))
    return hidden


# The first characters that _scan looks at: < d f s v.
cdef unsigned char _FIRST[119]
for _c in range(119):
    _FIRST[_c] = _c in (60, 100, 102, 115, 118)


cdef bint _hidden_images(object low, Py_ssize_t *images):
    cdef int kind = PyUnicode_KIND(low)
    cdef void *data = PyUnicode_DATA(low)
    cdef Py_ssize_t n = len(low)
    if kind == 1:
        return _scan(<const uint8_t *>data, n, images)
    if kind == 2:
        return _scan(<const uint16_t *>data, n, images)
    return _scan(<const uint32_t *>data, n, images)


if _HIDDEN != ("display:none", "visibility:hidden", "font-size:0", "font-size:1px",
               "size=0", "size=\"0\"", "size=1>", "size=\"1\""):
    raise ImportError("core.spam.features._HIDDEN changed: update _hidden()")


cdef bint _link_mismatch(object low):
    """Whether one of the first MAX_LINKS anchors names another host in its
    text than its href goes to (the twin's _anchors loop)."""
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t close, at, end
    cdef int count
    for count in range(MAX_LINKS):
        pos = low.find("<a ", pos)
        if pos < 0:
            return False
        close = low.find(">", pos, pos + 2000)
        if close < 0:
            return False
        at = low.find("href", pos, close)
        pos = close
        if at < 0:
            continue
        end = low.find("<", close, close + 300)
        shown = low[close + 1:end if end >= 0 else close + 300]
        # Cheap test first: most link texts name no host at all.
        if not _may_name_host(shown):
            continue
        named = _py._TEXT_HOST_RE.search(shown)
        if not named:
            continue
        value = low[at + 4:close].lstrip(" =\"'")
        href = value.split(None, 1)[0].rstrip("\"'") if value.strip() else ""
        host = _py._URL_HOST_RE.match(href)
        if not host:
            continue
        target = host.group(1).rstrip(".")
        named = named.group(1).rstrip(".")
        if not (target == named or target.endswith("." + named)
                or named.endswith("." + target)):
            return True
    return False


def html_features(html, list out):
    """Hidden text, image-only bodies, link text naming another host."""
    cdef Py_ssize_t words
    cdef Py_ssize_t images = 0
    low = html[:MAX_HTML_SCAN].lower()
    if type(low) is not str:
        _py.html_features(html, out)
        return
    if _hidden_images(low, &images):
        out.append((b"html:", b"hidden", LITERAL))
    if images:
        words = _text_words(low, 50000)
        if words < 0:
            text = _py._TAG_RE.sub(" ", low[:50000])
            words = len(_py._TEXTWORD_RE.findall(text))
        if words < 20:
            out.append((b"html:", b"imageonly", LITERAL))
        out.append((b"html:images:", str(min(images, 5)).encode(), LITERAL))

    if _link_mismatch(low):
        out.append((b"html:", b"linkmismatch", LITERAL))


def body_segments(parsed, list out):
    """The body segments of ``parsed``, appended to ``out``: the twin's walk
    over the parts (a few per message), with the compiled HTML features."""
    _py.body_segments(parsed, out, html_features, clean)


def segments(parsed):
    """The token segments of ``parsed``, headers first."""
    cdef list out = []
    header_segments(parsed, out)
    body_segments(parsed, out)
    return out


def parts(parsed):
    """The header segments and the body segments of ``parsed``, apart."""
    cdef list head = []
    cdef list body = []
    header_segments(parsed, head)
    body_segments(parsed, body)
    return head, body

