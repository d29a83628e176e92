"""Compiled tokenizer: segments of a message to 64-bit token hashes.

Private: ``core.spam.tokenizer`` validates input and calls ``hash_segments``.
Each step mirrors ``core/spam/tokenize_py.py`` (the twin) in the same order;
the tests compare both on the same inputs.
"""

from cpython.array cimport array, clone, resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memchr, memcmp

from core.spam import tokenspec as _ts

cdef uint64_t _FNV_OFFSET = _ts.FNV_OFFSET
cdef uint64_t _FNV_PRIME = _ts.FNV_PRIME
cdef uint64_t _MIX_A = _ts.MIX_A
cdef uint64_t _MIX_B = _ts.MIX_B
cdef uint64_t _MIX_C = _ts.MIX_C
cdef Py_ssize_t _MAX_PIECES = _ts.MAX_PIECES
cdef Py_ssize_t _MAX_TAG = _ts.MAX_TAG
cdef Py_ssize_t _MAX_LITERAL = _ts.MAX_LITERAL
cdef Py_ssize_t _MAX_ENTITY = _ts.MAX_ENTITY
cdef int _WORDS = _ts.WORDS
cdef int _HTML = _ts.HTML
cdef int _LITERAL = _ts.LITERAL

# OSB windows longer than this are cut to it (the settings check the range).
cdef enum:
    _MAX_WINDOW = 8

cdef unsigned char _CLASS[256]
cdef unsigned char _STRIPPED[256]
cdef unsigned char _PIECE[256]
cdef unsigned char _ALNUM[256]

cdef bytes _table = _ts.CLASSES
cdef int _c
for _c in range(256):
    _CLASS[_c] = _table[_c]
    _STRIPPED[_c] = 0
    _PIECE[_c] = 1 if (48 <= _c <= 57 or 97 <= _c <= 122 or _c >= 128) else 0
    _ALNUM[_c] = 1 if (48 <= _c <= 57 or 97 <= _c <= 122 or 65 <= _c <= 90) else 0
for _c in _ts.STRIP:
    _STRIPPED[_c] = 1

cdef array _TEMPLATE = array("q")


cdef inline uint64_t _fnv(uint64_t state, const unsigned char *data,
                          Py_ssize_t size) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(size):
        state = (state ^ data[k]) * _FNV_PRIME
    return state


cdef inline uint64_t _fnv_byte(uint64_t state, unsigned char byte) noexcept nogil:
    return (state ^ byte) * _FNV_PRIME


cdef inline uint64_t _mix(uint64_t first, uint64_t second,
                          uint64_t distance) noexcept nogil:
    cdef uint64_t x = first * _MIX_A + second + distance
    x ^= x >> 30
    x *= _MIX_B
    x ^= x >> 27
    x *= _MIX_C
    x ^= x >> 31
    return x


cdef inline bytes _span(const unsigned char *data, Py_ssize_t size):
    return (<const char *>data)[:size]


cdef class _Sink:
    """Collects hashes up to the cap, and names when some are wanted."""

    def __cinit__(self, Py_ssize_t cap, object wanted):
        self.cap = cap if cap > 0 else 0
        self.limit = self.cap
        self.out = <int64_t *>malloc((self.cap + 1) * sizeof(int64_t))
        if self.out == NULL:
            raise MemoryError()
        self.count = 0
        self.wanted = wanted
        self.names = {}
        self.nfew = -1
        if wanted is not None and len(wanted) <= _FEW_WANTED:
            try:
                self.nfew = 0
                for value in wanted:
                    self.few[self.nfew] = value
                    self.nfew += 1
            except (OverflowError, TypeError):
                # Not all are 64-bit hashes: the set lookup handles them.
                self.nfew = -1

    def __dealloc__(self):
        free(self.out)

    cdef int emit(self, uint64_t value) except -1:
        """Store a hash; 1 when the caller must name it (it is wanted)."""
        cdef Py_ssize_t k
        if self.count >= self.limit:
            return 0
        if value == 0:
            value = 1
        self.last = <int64_t>value
        self.out[self.count] = self.last
        self.count += 1
        if self.wanted is None:
            return 0
        if self.nfew >= 0:
            for k in range(self.nfew):
                if self.few[k] == self.last:
                    return 1
            return 0
        return 1 if self.last in self.wanted else 0

    cdef int name(self, bytes text) except -1:
        self.names[self.last] = text.decode("utf-8", "replace")
        return 0


cdef inline bint _is_space(unsigned char ch) noexcept nogil:
    return ch == 32 or ch == 9 or ch == 10 or ch == 13


cdef Py_ssize_t _tag_end(const unsigned char *data, Py_ssize_t size,
                         Py_ssize_t k) noexcept nogil:
    """Index of the '>' closing a tag (outside quoted values), or size."""
    cdef unsigned char quote = 0
    cdef unsigned char last = 0
    cdef unsigned char ch
    while k < size:
        ch = data[k]
        if quote:
            if ch == quote:
                quote = 0
        elif (ch == 34 or ch == 39) and last == 61:
            quote = ch
        elif ch == 62:
            return k
        if not _is_space(ch) and not quote:
            last = ch
        k += 1
    return size


cdef Py_ssize_t _find(const unsigned char *data, Py_ssize_t size, Py_ssize_t start,
                      const unsigned char *needle, Py_ssize_t length) noexcept nogil:
    """First index >= start of needle in data, or -1 (as bytes.find)."""
    cdef const unsigned char *hit
    if length == 0:
        return start if start <= size else -1
    while start + length <= size:
        hit = <const unsigned char *>memchr(data + start, needle[0], size - start)
        if hit == NULL:
            return -1
        start = hit - data
        if start + length > size:
            return -1
        if memcmp(hit, needle, length) == 0:
            return start
        start += 1
    return -1


cdef Py_ssize_t _utf8(uint64_t code, unsigned char *out) noexcept nogil:
    if code < 0x80:
        out[0] = <unsigned char>code
        return 1
    if code < 0x800:
        out[0] = <unsigned char>(0xC0 | (code >> 6))
        out[1] = <unsigned char>(0x80 | (code & 0x3F))
        return 2
    if code < 0x10000:
        out[0] = <unsigned char>(0xE0 | (code >> 12))
        out[1] = <unsigned char>(0x80 | ((code >> 6) & 0x3F))
        out[2] = <unsigned char>(0x80 | (code & 0x3F))
        return 3
    out[0] = <unsigned char>(0xF0 | (code >> 18))
    out[1] = <unsigned char>(0x80 | ((code >> 12) & 0x3F))
    out[2] = <unsigned char>(0x80 | ((code >> 6) & 0x3F))
    out[3] = <unsigned char>(0x80 | (code & 0x3F))
    return 4


cdef Py_ssize_t _entity(const unsigned char *data, Py_ssize_t size, Py_ssize_t i,
                        unsigned char *out, Py_ssize_t *written) noexcept nogil:
    """Decode the entity at data[i] == '&' into out; its length, or 0."""
    cdef Py_ssize_t k = i + 1
    cdef Py_ssize_t start, end
    cdef uint64_t code = 0
    cdef unsigned char ch
    cdef Py_ssize_t named
    while k < size and k - i - 1 < _MAX_ENTITY and (_ALNUM[data[k]] or data[k] == 35):
        k += 1
    if k >= size or data[k] != 59 or k == i + 1:
        return 0
    start = i + 1
    end = k
    if data[start] == 35:
        if end - start >= 2 and data[start + 1] == 120:
            start += 2
            if start == end:
                return 0
            while start < end:
                ch = data[start]
                if 48 <= ch <= 57:
                    code = code * 16 + (ch - 48)
                elif 97 <= ch <= 102:
                    code = code * 16 + (ch - 87)
                else:
                    return 0
                start += 1
        else:
            start += 1
            if start == end:
                return 0
            while start < end:
                ch = data[start]
                if not 48 <= ch <= 57:
                    return 0
                code = code * 10 + (ch - 48)
                start += 1
        if code == 0 or code >= 0x110000 or 0xD800 <= code <= 0xDFFF:
            return 0
        if _invisible(code):
            written[0] = 0
            return k - i + 1
        if 65 <= code <= 90:
            code += 32
        written[0] = _utf8(code, out)
        return k - i + 1
    named = _named(data + start, end - start, out)
    if named >= 0:
        written[0] = named
        return k - i + 1
    return 0


cdef inline bint _invisible(uint64_t code) noexcept nogil:
    # Keep in step with tokenspec.INVISIBLE.
    return (code == 0xAD or code == 0x34F or code == 0x61C
            or 0x115F <= code <= 0x1160 or 0x17B4 <= code <= 0x17B5
            or 0x180B <= code <= 0x180F or 0x200B <= code <= 0x200F
            or 0x202A <= code <= 0x202E or 0x2060 <= code <= 0x206F
            or code == 0x3164 or 0xFE00 <= code <= 0xFE0F or code == 0xFEFF
            or code == 0xFFA0 or 0xFFF0 <= code <= 0xFFF8
            or 0x1BCA0 <= code <= 0x1BCA3 or 0x1D173 <= code <= 0x1D17A
            or 0xE0000 <= code <= 0xE0FFF)


cdef inline bint _is(const unsigned char *data, Py_ssize_t size,
                     const char *name, Py_ssize_t length) noexcept nogil:
    return size == length and memcmp(data, name, length) == 0


cdef Py_ssize_t _named(const unsigned char *name, Py_ssize_t size,
                       unsigned char *out) noexcept nogil:
    """Bytes written for the named entity, or -1 when it is not one we know."""
    # Keep in step with tokenspec.ENTITIES.
    if (_is(name, size, b"shy", 3) or _is(name, size, b"zwsp", 4)
            or _is(name, size, b"zwj", 3) or _is(name, size, b"zwnj", 4)
            or _is(name, size, b"lrm", 3) or _is(name, size, b"rlm", 3)):
        return 0
    if _is(name, size, b"amp", 3):
        out[0] = 38
    elif _is(name, size, b"lt", 2):
        out[0] = 60
    elif _is(name, size, b"gt", 2):
        out[0] = 62
    elif _is(name, size, b"quot", 4):
        out[0] = 34
    elif _is(name, size, b"apos", 4):
        out[0] = 39
    elif _is(name, size, b"nbsp", 4):
        out[0] = 32
    else:
        return -1
    return 1


cdef int _tag_urls(
    _Sink sink,
    const unsigned char *data,
    Py_ssize_t e,
    Py_ssize_t k,
    uint64_t base,
    bytes prefix,
    _OptsC *opts,
) except -1:
    """URL pieces of the href= and src= values in data[e:k] (one tag)."""
    cdef Py_ssize_t p, v, end
    cdef int key
    cdef const unsigned char *hit
    for key in range(2):
        if key == 0:
            p = _find(data, k, e, <const unsigned char *>b"href=", 5)
            v = p + 5
        else:
            p = _find(data, k, e, <const unsigned char *>b"src=", 4)
            v = p + 4
        if p < 0:
            continue
        if v < k and (data[v] == 34 or data[v] == 39):
            hit = <const unsigned char *>memchr(data + v + 1, data[v], k - v - 1)
            end = k if hit == NULL else hit - data
            v += 1
        else:
            end = v
            while end < k and not _is_space(data[end]) and data[end] != 62:
                end += 1
        _crack(sink, data + v, end - v, b"url:", base, prefix, opts)
    return 0


cdef Py_ssize_t _strip_html(
    _Sink sink,
    const unsigned char *data,
    Py_ssize_t size,
    unsigned char *out,
    uint64_t base,
    bytes prefix,
    _OptsC *opts,
) except -1:
    """Text of lowercased HTML into out (never longer than data); its length."""
    cdef Py_ssize_t i = 0
    cdef Py_ssize_t o = 0
    cdef Py_ssize_t j, k, s, e, length, written
    cdef unsigned char nxt
    cdef bint closing
    cdef uint64_t value
    cdef unsigned char closer[2 + 64]
    # Once a "<!--" finds no "-->", none after it can: not searched again.
    cdef bint closers = True
    while i < size:
        j = i
        while j < size and data[j] != 60 and data[j] != 38:
            out[o] = data[j]
            o += 1
            j += 1
        i = j
        if i >= size:
            break

        if data[i] == 38:
            length = _entity(data, size, i, out + o, &written)
            if length == 0:
                out[o] = 38
                o += 1
                i += 1
            else:
                o += written
                i += length
            continue

        if closers and i + 4 <= size and memcmp(data + i, b"<!--", 4) == 0:
            k = _find(data, size, i + 4, <const unsigned char *>b"-->", 3)
            if k >= 0:
                i = k + 3
                continue
            closers = False
            # Never closed: a declaration up to its ">" (as the twin).
        nxt = data[i + 1] if i + 1 < size else 0
        if nxt == 33 or nxt == 63:
            k = _find(data, size, i, <const unsigned char *>b">", 1)
            i = size if k < 0 else k + 1
            out[o] = 32
            o += 1
            continue
        closing = nxt == 47
        s = i + 1 + closing
        if s < size and (97 <= data[s] <= 122 or 65 <= data[s] <= 90):
            e = s
            while e < size and _ALNUM[data[e]]:
                e += 1
            k = _tag_end(data, size, e)
            i = k + 1 if k < size else size
            out[o] = 32
            o += 1
            if not closing:
                length = e - s if e - s < _MAX_TAG else _MAX_TAG
                value = _fnv(_fnv_byte(base, 60), data + s, length)
                if sink.emit(value):
                    sink.name(prefix + b"<" + _span(data + s, length))
                _tag_urls(sink, data, e, k, base, prefix, opts)
                if (_is(data + s, e - s, b"script", 6)
                        or _is(data + s, e - s, b"style", 5)):
                    closer[0] = 60
                    closer[1] = 47
                    for k in range(e - s):
                        closer[2 + k] = data[s + k]
                    k = _find(data, size, i, closer, 2 + e - s)
                    i = size if k < 0 else k
            continue
        out[o] = 60
        o += 1
        i += 1
    return o


cdef inline bint _has_scheme(const unsigned char *word, Py_ssize_t size) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(size - 2):
        if word[k] == 58 and word[k + 1] == 47 and word[k + 2] == 47:
            return True
    return False


cdef int _crack(
    _Sink sink,
    const unsigned char *word,
    Py_ssize_t size,
    bytes kind,
    uint64_t base,
    bytes prefix,
    _OptsC *opts,
) except -1:
    cdef Py_ssize_t i = 0
    cdef Py_ssize_t start, length
    cdef Py_ssize_t index = 0
    cdef uint64_t head = _fnv(base, <const unsigned char *>PyBytes_AS_STRING(kind),
                              PyBytes_GET_SIZE(kind))
    while i < size:
        while i < size and not _PIECE[word[i]]:
            i += 1
        if i >= size:
            break
        start = i
        while i < size and _PIECE[word[i]]:
            i += 1
        if index >= _MAX_PIECES:
            return 0
        index += 1
        length = i - start
        if opts.min_len <= length <= opts.max_len:
            if sink.emit(_fnv(head, word + start, length)):
                sink.name(prefix + kind + _span(word + start, length))
    return 0


cdef int _words(
    _Sink sink,
    const unsigned char *text,
    Py_ssize_t size,
    uint64_t base,
    bytes prefix,
    _OptsC *opts,
) except -1:
    cdef Py_ssize_t i = 0
    cdef Py_ssize_t s, e, n, d, bucket, digits
    cdef Py_ssize_t keep = opts.window - 1
    cdef Py_ssize_t filled = 0
    cdef uint64_t value
    cdef uint64_t ring[_MAX_WINDOW]
    cdef Py_ssize_t ring_at[_MAX_WINDOW]
    cdef Py_ssize_t ring_len[_MAX_WINDOW]
    cdef unsigned char number[24]
    if keep > _MAX_WINDOW - 1:
        keep = _MAX_WINDOW - 1
    if keep < 0:
        keep = 0
    while i < size:
        if sink.count >= sink.limit:
            return 0
        while i < size and not _CLASS[text[i]]:
            i += 1
        s = i
        while i < size and _CLASS[text[i]]:
            i += 1
        e = i
        while s < e and _STRIPPED[text[s]]:
            s += 1
        while e > s and _STRIPPED[text[e - 1]]:
            e -= 1
        n = e - s
        if n == 0:
            continue

        if _has_scheme(text + s, n) or (n >= 4 and memcmp(text + s, b"www.", 4) == 0):
            _crack(sink, text + s, n, b"url:", base, prefix, opts)
            continue
        if memchr(text + s, 64, n) != NULL:
            _crack(sink, text + s, n, b"email:", base, prefix, opts)
            continue

        if n < opts.min_len:
            continue
        if n > opts.max_len:
            # "skip:" + first byte + " " + length rounded down to tens.
            value = _fnv(base, <const unsigned char *>b"skip:", 5)
            value = _fnv_byte(_fnv_byte(value, text[s]), 32)
            bucket = n // 10 * 10
            digits = 0
            while True:
                number[23 - digits] = 48 + bucket % 10
                digits += 1
                bucket //= 10
                if bucket == 0:
                    break
            value = _fnv(value, number + 24 - digits, digits)
            if sink.emit(value):
                sink.name(prefix + b"skip:" + _span(text + s, 1) + b" "
                          + _span(number + 24 - digits, digits))
            continue

        value = _fnv(base, text + s, n)
        if sink.emit(value):
            sink.name(prefix + _span(text + s, n))
        for d in range(filled):
            if sink.emit(_mix(ring[d], value, d + 1)):
                sink.name(b"%s%s ~%d %s" % (
                    prefix, _span(text + ring_at[d], ring_len[d]), d + 1,
                    _span(text + s, n)))
        if keep > 0:
            for d in range(keep - 1, 0, -1):
                ring[d] = ring[d - 1]
                ring_at[d] = ring_at[d - 1]
                ring_len[d] = ring_len[d - 1]
            ring[0] = value
            ring_at[0] = s
            ring_len[0] = n
            if filled < keep:
                filled += 1
    return 0


cdef void _lower(const unsigned char *data, Py_ssize_t size,
                 unsigned char *out) noexcept nogil:
    cdef Py_ssize_t k
    cdef unsigned char ch
    for k in range(size):
        ch = data[k]
        out[k] = ch + 32 if 65 <= ch <= 90 else ch


def hash_segments(list segments, object opts=None, object wanted=None):
    """Token hashes of segments as array('q'); with wanted (a set of hashes)
    also a dict naming those of them that occur."""
    if opts is None:
        opts = _ts.Options()
    cdef _OptsC copts
    copts.window = opts.window
    copts.min_len = opts.min_len
    copts.max_len = opts.max_len
    cdef _Sink sink = _Sink(opts.max_tokens, wanted)
    cdef bytes prefix, data
    cdef int mode
    cdef Py_ssize_t size, stripped, k
    cdef uint64_t base
    cdef unsigned char *low = NULL
    cdef unsigned char *text = NULL
    cdef const unsigned char *raw
    cdef array result
    cdef Py_ssize_t texts = 0
    for segment in segments:
        if segment[2] != _LITERAL:
            texts += 1
    try:
        for segment in segments:
            if sink.count >= sink.cap:
                break
            prefix, data, mode = segment
            base = _fnv(_FNV_OFFSET, <const unsigned char *>PyBytes_AS_STRING(prefix),
                        PyBytes_GET_SIZE(prefix))
            size = PyBytes_GET_SIZE(data)
            sink.limit = sink.cap
            if mode != _LITERAL:
                # A fair share of what is left (as the twin's _share).
                sink.limit = sink.count + (sink.cap - sink.count + texts - 1) // texts
                texts -= 1
            if mode == _LITERAL:
                if size > _MAX_LITERAL:
                    size = _MAX_LITERAL
                low = <unsigned char *>malloc(size + 1)
                if low == NULL:
                    raise MemoryError()
                _lower(<const unsigned char *>PyBytes_AS_STRING(data), size, low)
                if sink.emit(_fnv(base, low, size)):
                    sink.name(prefix + _span(low, size))
                free(low)
                low = NULL
                continue

            low = <unsigned char *>malloc(size + 1)
            if low == NULL:
                raise MemoryError()
            raw = <const unsigned char *>PyBytes_AS_STRING(data)
            with nogil:
                _lower(raw, size, low)
            if mode == _HTML:
                text = <unsigned char *>malloc(size + 1)
                if text == NULL:
                    raise MemoryError()
                stripped = _strip_html(sink, low, size, text, base, prefix, &copts)
                _words(sink, text, stripped, base, prefix, &copts)
                free(text)
                text = NULL
            else:
                _words(sink, low, size, base, prefix, &copts)
            free(low)
            low = NULL
    finally:
        free(low)
        free(text)

    result = clone(_TEMPLATE, sink.count, False)
    for k in range(sink.count):
        result.data.as_longlongs[k] = sink.out[k]
    if wanted is None:
        return result
    return result, sink.names
