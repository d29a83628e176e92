"""The token rules both tokenizers follow: one table, one set of constants.

The compiled tokenizer (``core.fast._tokenize``) and its pure-Python twin
(``core.spam.tokenize_py``) read their character classes and hash constants
from here, so the two cannot drift apart on what a word is.

A message becomes a list of segments ``(prefix, data, mode)``: ``prefix`` is
put before every token of the segment (``b"subject:"``), ``data`` is UTF-8
bytes and ``mode`` says how to cut it:

- ``WORDS``: words of plain text; URLs and addresses are cracked into pieces;
  words take part in orthogonal sparse bigrams (OSB) within the segment.
- ``HTML``: like ``WORDS`` after tags, comments, scripts and styles are
  stripped and entities decoded; each opening tag gives a ``<name`` token.
- ``LITERAL``: the whole (lowercased, truncated) data is one token.

A token is hashed to 64 bits with FNV-1a over ``prefix + token bytes``; an
OSB pair mixes the two word hashes and their distance. Hashes are stored as
signed 64-bit integers (what SQL BIGINT holds); 0 never occurs.
"""

from __future__ import annotations

import dataclasses

WORDS = 0
HTML = 1
LITERAL = 2

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
MASK64 = (1 << 64) - 1

# Multipliers of the pair mixer (splitmix64 finaliser constants).
MIX_A = 0x9E3779B97F4A7C15
MIX_B = 0xBF58476D1CE4E5B9
MIX_C = 0x94D049BB133111EB

# Byte classes: 0 separates words, 1 belongs to a word.
_WORD_PUNCT = b"$%'-./:=?@_&#!+~"


def _classes() -> bytes:
    table = bytearray(256)
    for code in range(256):
        if code >= 0x80 or chr(code).isalnum() and code < 0x80:
            table[code] = 1
    for code in _WORD_PUNCT:
        table[code] = 1
    return bytes(table)


CLASSES = _classes()

# Taken off both ends of a word; "!", "$" and "%" stay (they are telling).
STRIP = b".:'-/=?&#_~+@"

# Named entities decoded in HTML text; the rest stay as written.
ENTITIES = {
    b"amp": b"&",
    b"lt": b"<",
    b"gt": b">",
    b"quot": b'"',
    b"apos": b"'",
    b"nbsp": b" ",
    # Drawn as nothing: decoded to nothing, so they cannot cut a word.
    b"shy": b"",
    b"zwsp": b"",
    b"zwj": b"",
    b"zwnj": b"",
    b"lrm": b"",
    b"rlm": b"",
}

# Code points a mail client draws as nothing (as features.visible drops
# from decoded text), for numeric entities: (first, last) ranges.
INVISIBLE = ((0xAD, 0xAD), (0x34F, 0x34F), (0x61C, 0x61C), (0x115F, 0x1160),
             (0x17B4, 0x17B5), (0x180B, 0x180F), (0x200B, 0x200F),
             (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
             (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0),
             (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A),
             (0xE0000, 0xE0FFF))


def invisible(code: int) -> bool:
    """Whether code point ``code`` is drawn as nothing (``INVISIBLE``)."""
    return any(first <= code <= last for first, last in INVISIBLE)

# Most pieces taken from one URL or address, and the longest tag name kept.
MAX_PIECES = 16
MAX_TAG = 15
MAX_LITERAL = 64
MAX_ENTITY = 10


@dataclasses.dataclass(frozen=True)
class Options:
    """Knobs of the hot path; the defaults are the tuned ones."""

    window: int = 3  # OSB window: a word pairs with the window-1 words before
    max_tokens: int = 40000  # per message, bigrams included
    min_len: int = 2  # shorter words are dropped
    max_len: int = 24  # longer words become a "skip:" token


def to_signed(value: int) -> int:
    """An unsigned 64-bit hash as the signed integer SQL stores."""
    value &= MASK64
    if value == 0:
        value = 1
    return value - (1 << 64) if value >= 1 << 63 else value
