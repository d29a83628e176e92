"""What the token store holds for a token named as the admin sees it.

The "Why" list of the web admin and of ``portcullis track`` names tokens as
the tokenizer writes them (``core.spam.tokenize_py``): a word or a literal
is its segment's prefix followed by its text (``free``,
``subject:fastest``, ``rcvd:host:mail.example.net``), an OSB pair is the
prefix, the older word, `` ~distance `` and the newer word
(``please ~1 click``), and a token that had no name at hand is ``#`` and
its hash in hex. :func:`lookup` turns such a name back into the 64-bit
hash and reads the token's row: ham and spam counts, Robinson's estimate
f as the chi-square scorer computes it, the logistic weight and the day
it was last learned.

A single token hashes to FNV-1a over prefix and text in one run, so where
the prefix ends does not change its hash. A pair hashes each word from the
prefix's state, so the split matters: every split of the first half at a
":" (and no prefix at all) is tried, and the splits found in the store are
reported.

Limits: names are ASCII-lowercased as the tokenizer lowercases what it
reads; a name shown with a replacement character (the message had bytes
that are not UTF-8 there) cannot be turned back into its hash, so it is
"not in the store" even when the token is.
"""

from __future__ import annotations

import dataclasses
import datetime
import re

from core.models import BayesToken
from core.spam import scorer, store
from core.spam import tokenspec as ts
from core.spam.tokenize_py import fnv, mix

# The pair shape "<prefix><older> ~<distance> <newer>"; words hold no spaces.
_PAIR_RE = re.compile(rb"^(\S+) ~([1-9]\d?) (\S+)$")
_HASH_RE = re.compile(r"^#([0-9a-f]{16})$")


@dataclasses.dataclass
class Match:
    """One reading of a token name that the store holds."""

    kind: str  # "token" (word or literal), "pair" (OSB pair) or "hash" (#hex)
    prefix: str  # where the name's prefix ends (pairs), "" for none
    token: int  # the signed 64-bit hash, as stored
    ham: int
    spam: int
    f: float | None  # Robinson's estimate; None when it cannot be computed
    weight: float
    last_seen: int  # day number (days since 1970-01-01, UTC)

    def as_dict(self) -> dict:
        day = datetime.date(1970, 1, 1) + datetime.timedelta(days=self.last_seen)
        return {"kind": self.kind, "prefix": self.prefix,
                "hash": f"{self.token & ts.MASK64:016x}",
                "ham": self.ham, "spam": self.spam,
                "f": None if self.f is None else round(self.f, 4),
                "weight": round(self.weight, 6), "last_seen": day.isoformat(),
                "last_seen_day": self.last_seen}


@dataclasses.dataclass
class TokenInfo:
    """A token name as given and the readings of it found in the store."""

    name: str
    matches: list[Match]

    def as_dict(self) -> dict:
        return {"name": self.name, "found": bool(self.matches),
                "matches": [m.as_dict() for m in self.matches]}


def _prefixes(text: bytes) -> list[bytes]:
    """The empty prefix and every beginning of ``text`` that ends at a ":"."""
    return [b""] + [text[:i + 1] for i in range(len(text) - 1) if text[i] == 58]


def candidates(name: str) -> list[tuple[str, str, int]]:
    """(kind, prefix, signed hash) for every reading of a shown token name."""
    hashed = _HASH_RE.match(name.strip().lower())
    if hashed:
        return [("hash", "", ts.to_signed(int(hashed.group(1), 16)))]
    raw = name.encode("utf-8").lower()
    # One hash however the name splits: FNV-1a continues over the bytes.
    found = [("token", "", ts.to_signed(fnv(ts.FNV_OFFSET, raw)))]
    pair = _PAIR_RE.match(raw)
    if pair:
        first, distance, second = pair.group(1), int(pair.group(2)), pair.group(3)
        for prefix in _prefixes(first):
            base = fnv(ts.FNV_OFFSET, prefix)
            value = mix(fnv(base, first[len(prefix):]), fnv(base, second), distance)
            found.append(("pair", prefix.decode("utf-8", "replace"),
                          ts.to_signed(value)))
    return found


def estimate(ham: int, spam: int, nham: int, nspam: int) -> float | None:
    """Robinson's f of one token, exactly as ``bayes_py.score`` computes it."""
    if nham <= 0 or nspam <= 0:
        return None
    ham, spam = min(ham, nham), min(spam, nspam)
    hamratio = ham / nham
    spamratio = spam / nspam
    if hamratio + spamratio == 0.0:
        return None
    prob = spamratio / (hamratio + spamratio)
    total = float(ham + spam)
    return ((scorer.STRENGTH * scorer.UNKNOWN + total * prob)
            / (scorer.STRENGTH + total))


def lookup(names, values: dict[str, int] | None = None) -> list[TokenInfo]:
    """The store's rows for each token name (the database must be open)."""
    values = values or store.meta()
    readings = {name: candidates(name) for name in names}
    wanted = sorted({token for found in readings.values() for *_, token in found})
    rows = {}
    for start in range(0, len(wanted), 500):
        query = BayesToken.select().where(
            BayesToken.token.in_(wanted[start:start + 500]))
        rows.update((row.token, row) for row in query)

    out = []
    for name, found in readings.items():
        matches = []
        for kind, prefix, token in found:
            row = rows.get(token)
            if row is None or any(m.token == token for m in matches):
                continue
            matches.append(Match(kind, prefix, token, row.ham, row.spam,
                                 estimate(row.ham, row.spam, values["nham"],
                                          values["nspam"]),
                                 row.weight, row.last_seen))
        out.append(TokenInfo(name, matches))
    return out


def report(infos: list[TokenInfo], values: dict[str, int]) -> dict:
    """Everything :func:`lookup` found, as plain data (for ``--json``)."""
    return {"ham_messages": values["nham"], "spam_messages": values["nspam"],
            "tokens": [info.as_dict() for info in infos]}
