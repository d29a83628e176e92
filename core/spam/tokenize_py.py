"""Pure-Python twin of ``core.fast._tokenize``: segments to 64-bit token hashes.

Used where the compiled module is missing, and by the tests, which run the
same cases over both and demand equal output. The rules are described in
``core.spam.tokenspec``; every step here has its counterpart, in the same
order, in ``_tokenize.pyx``.
"""

from __future__ import annotations

import re
from array import array

from core.spam import tokenspec as ts

_WORD_RE = re.compile(
    b"[" + b"".join(re.escape(bytes([c])) for c in range(256) if ts.CLASSES[c])
    + b"]+"
)
_PIECE_RE = re.compile(rb"[a-z0-9\x80-\xff]+")
_MASK = ts.MASK64


def fnv(state: int, data: bytes) -> int:
    """FNV-1a 64 continued from ``state`` over ``data``."""
    for byte in data:
        state = ((state ^ byte) * ts.FNV_PRIME) & _MASK
    return state


def mix(first: int, second: int, distance: int) -> int:
    """The hash of an ordered word pair ``distance`` words apart."""
    x = (first * ts.MIX_A + second + distance) & _MASK
    x ^= x >> 30
    x = (x * ts.MIX_B) & _MASK
    x ^= x >> 27
    x = (x * ts.MIX_C) & _MASK
    x ^= x >> 31
    return x


def _isalnum(byte: int) -> bool:
    return 48 <= byte <= 57 or 97 <= byte <= 122 or 65 <= byte <= 90


class _Sink:
    """Collects hashes up to the cap, and names when some are wanted."""

    def __init__(self, cap: int, wanted):
        self.out = array("q")
        self.cap = cap
        self.wanted = wanted
        self.names: dict[int, str] = {}

    @property
    def full(self) -> bool:
        return len(self.out) >= self.cap

    def emit(self, value: int, name) -> None:
        if len(self.out) >= self.cap:
            return
        signed = ts.to_signed(value)
        self.out.append(signed)
        if self.wanted is not None and signed in self.wanted:
            self.names[signed] = name().decode("utf-8", "replace")


def _entity(data: bytes, i: int) -> tuple[bytes | None, int]:
    """Decode the entity at ``data[i] == '&'``: (bytes, length) or (None, 1)."""
    n = len(data)
    k = i + 1
    while k < n and k - i - 1 < ts.MAX_ENTITY and (
        _isalnum(data[k]) or data[k] == 35
    ):
        k += 1
    if k >= n or data[k] != 59 or k == i + 1:
        return None, 1
    body = data[i + 1:k]
    if body[0] == 35:
        if body[1:2] == b"x":
            digits, base = body[2:], 16
            valid = all(48 <= c <= 57 or 97 <= c <= 102 for c in digits)
        else:
            digits, base = body[1:], 10
            valid = all(48 <= c <= 57 for c in digits)
        if not digits or not valid:
            return None, 1
        code = int(digits, base)
        if code <= 0 or code >= 0x110000 or 0xD800 <= code <= 0xDFFF:
            return None, 1
        if ts.invisible(code):
            return b"", k - i + 1
        if 65 <= code <= 90:
            code += 32
        return chr(code).encode("utf-8"), k - i + 1
    named = ts.ENTITIES.get(body)
    if named is None:
        return None, 1
    return named, k - i + 1


def _tag_end(data: bytes, k: int) -> int:
    """Index of the '>' closing a tag (outside quoted values), or len(data)."""
    n = len(data)
    quote = 0
    last = 0  # last non-space byte outside quotes
    while k < n:
        ch = data[k]
        if quote:
            if ch == quote:
                quote = 0
        elif (ch == 34 or ch == 39) and last == 61:
            quote = ch
        elif ch == 62:
            return k
        if ch != 32 and ch != 9 and ch != 10 and ch != 13 and not quote:
            last = ch
        k += 1
    return n


def _tag_urls(data: bytes, e: int, k: int, base: int, prefix: bytes, opts,
              sink: _Sink) -> None:
    """URL pieces of the href= and src= values in ``data[e:k]`` (one tag)."""
    for key in (b"href=", b"src="):
        p = data.find(key, e, k)
        if p < 0:
            continue
        v = p + len(key)
        if v < k and (data[v] == 34 or data[v] == 39):
            end = data.find(data[v:v + 1], v + 1, k)
            end = k if end < 0 else end
            v += 1
        else:
            end = v
            while end < k and data[end] not in b" \t\r\n>":
                end += 1
        _crack(data[v:end], b"url:", base, prefix, opts, sink)


def strip_html(data: bytes, base: int, prefix: bytes, opts, sink: _Sink) -> bytes:
    """Text of lowercased HTML; emits a ``<name`` token per opening tag and
    the URL pieces of its href= and src= values."""
    out = bytearray()
    n = len(data)
    i = 0
    # Once a "<!--" finds no "-->", none after it can: not searched again.
    closers = True
    while i < n:
        lt = data.find(b"<", i)
        amp = data.find(b"&", i)
        j = min(x for x in (lt, amp, n) if x >= 0)
        out += data[i:j]
        i = j
        if i >= n:
            break

        if data[i] == 38:
            decoded, length = _entity(data, i)
            out += b"&" if decoded is None else decoded
            i += length
            continue

        if closers and data.startswith(b"<!--", i):
            k = data.find(b"-->", i + 4)
            if k >= 0:
                i = k + 3
                continue
            closers = False
            # Never closed: read as a declaration up to its ">", or a
            # "<!--" early in a spam hides everything after it.
        nxt = data[i + 1] if i + 1 < n else 0
        if nxt == 33 or nxt == 63:
            k = data.find(b">", i)
            i = n if k < 0 else k + 1
            out += b" "
            continue
        closing = nxt == 47
        s = i + 1 + closing
        if s < n and (97 <= data[s] <= 122 or 65 <= data[s] <= 90):
            e = s
            while e < n and _isalnum(data[e]):
                e += 1
            name = data[s:e]
            k = _tag_end(data, e)
            i = k + 1 if k < n else n
            out += b" "
            if not closing:
                token = b"<" + name[:ts.MAX_TAG]
                sink.emit(fnv(base, token), lambda t=token: prefix + t)
                _tag_urls(data, e, k, base, prefix, opts, sink)
                if name == b"script" or name == b"style":
                    end = data.find(b"</" + name, i)
                    i = n if end < 0 else end
            continue
        out += b"<"
        i += 1
    return bytes(out)


def _words(text: bytes, base: int, prefix: bytes, opts, sink: _Sink) -> None:
    ring: list[tuple[int, bytes]] = []
    keep = opts.window - 1
    for match in _WORD_RE.finditer(text):
        if sink.full:
            return
        word = match.group().strip(ts.STRIP)
        if not word:
            continue

        if b"://" in word or word.startswith(b"www."):
            _crack(word, b"url:", base, prefix, opts, sink)
            continue
        if b"@" in word:
            _crack(word, b"email:", base, prefix, opts, sink)
            continue

        size = len(word)
        if size < opts.min_len:
            continue
        if size > opts.max_len:
            token = b"skip:" + word[:1] + b" " + str(size // 10 * 10).encode()
            sink.emit(fnv(base, token), lambda t=token: prefix + t)
            continue

        value = fnv(base, word)
        sink.emit(value, lambda w=word: prefix + w)
        for distance, (older, older_word) in enumerate(reversed(ring), 1):
            sink.emit(
                mix(older, value, distance),
                lambda a=older_word, b=word, d=distance: b"%s%s ~%d %s"
                % (prefix, a, d, b),
            )
        if keep > 0:
            ring.append((value, word))
            if len(ring) > keep:
                del ring[0]


def _crack(word: bytes, kind: bytes, base: int, prefix: bytes, opts, sink) -> None:
    for index, match in enumerate(_PIECE_RE.finditer(word)):
        if index >= ts.MAX_PIECES:
            return
        piece = match.group()
        if opts.min_len <= len(piece) <= opts.max_len:
            token = kind + piece
            sink.emit(fnv(base, token), lambda t=token: prefix + t)


def _share(used: int, cap: int, texts: int) -> int:
    """Where a text segment must stop: a fair share of the tokens left.

    Each of the ``texts`` text segments still to come may take as many; what
    one leaves unused goes to those after it. Without the share, a first part
    full of padding would use the whole budget and hide the part after it.
    """
    return used + (cap - used + texts - 1) // texts


def hash_segments(segments, opts: ts.Options = ts.Options(), wanted=None):
    """Token hashes of ``segments`` as array('q'); with ``wanted`` (a set of
    hashes) also a dict naming those of them that occur."""
    sink = _Sink(opts.max_tokens, wanted)
    texts = sum(1 for segment in segments if segment[2] != ts.LITERAL)
    for prefix, data, mode in segments:
        if len(sink.out) >= opts.max_tokens:
            break
        base = fnv(ts.FNV_OFFSET, prefix)
        sink.cap = opts.max_tokens
        if mode != ts.LITERAL:
            sink.cap = _share(len(sink.out), opts.max_tokens, texts)
            texts -= 1
        if mode == ts.LITERAL:
            text = data[:ts.MAX_LITERAL].lower()
            sink.emit(fnv(base, text), lambda t=text, p=prefix: p + t)
            continue
        text = data.lower()
        if mode == ts.HTML:
            text = strip_html(text, base, prefix, opts, sink)
        _words(text, base, prefix, opts, sink)
    if wanted is None:
        return sink.out
    return sink.out, sink.names
