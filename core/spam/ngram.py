"""Character 4-gram logistic regression: the second voice of the filter.

A message becomes its header fields (``Name: value`` lines, decoded) and
then its text, cut at ``MAX_BYTES``; every 4-byte window of that is hashed
into one of ``2**BITS`` buckets and the message is the binary vector of
the buckets met, scaled to length 1. Its spam log-odds is the dot product
with a weight array trained by online logistic regression, a step taken
only on messages not already right by ``MARGIN`` (train on or near error,
as Sculley and Wachman's relaxed online SVMs and Goodman and Yih's
online logistic regression for spam). Character windows see what word
tokens miss: obfuscated words, markup habits, header formatting.

The compiled steps (``core.fast._ngram``) are used when built, else the
twin (``core.spam.ngram_py``).

Limits: only the first ``MAX_BYTES`` bytes of a message count; buckets are
shared by colliding 4-grams (about a million buckets for the few hundred
thousand distinct 4-grams of a typical training set).
"""

from __future__ import annotations

from array import array

from core.message import ParsedMessage
from core.spam import builds, features, ngram_py

try:
    from core.fast import _ngram as _compiled
except ImportError:  # not built: the twin does the same, slower
    _compiled = None

COMPILED = _compiled is not None
BITS = 20
MAX_BYTES = 3000
# Online steps: large, since a normalised vector of ~3000 buckets moves its
# score by only RATE * error per step; a step unless the true class has
# probability 1 - MARGIN already. Steps on ham are HAM_RATE times larger, as
# a false positive costs more than a miss. Chosen by 3-fold cross-validation
# on the training parts of four splits (bench/bayes.py), with
# ``scorer.NGRAM_WEIGHT``: no more held-out false positives than ``split``
# on any of them, fewest misses.
RATE = 16.0
HAM_RATE = 2.0
MARGIN = 0.05
PASSES = 10
# Fits averaged, each over the messages in its own orders. One online fit
# depends on the order it met the messages in: on the splits of the dev
# corpus two orders could differ by ten misses. The mean of four fits had
# fewer misses at one false positive on all four splits (bench/bayes.py
# --method mix --seed ...) and is one weight array to score with, as before;
# training the 4-grams takes four times as long.
FITS = 4


def implementation(compiled: bool | None = None):
    """The compiled ngram module, or the twin (ngram_py)."""
    return builds.choose(_compiled, ngram_py, compiled, "_ngram")


def text(parsed: ParsedMessage, limit: int = MAX_BYTES) -> bytes:
    """What the 4-gram model reads of a message: headers, then bodies."""
    out = []
    size = 0
    for name, value in parsed.headers:
        if features.skipped_field(name.lower()):
            continue
        line = f"{name}: {value}\n"
        out.append(line)
        size += len(line)
        if size >= limit:
            break
    out.append("\n")
    for part in parsed.parts:
        if size >= limit:
            break
        body, _ = features.part_text(part)
        if part.filename:
            chunk = f"[{part.content_type} {part.filename}]\n"
            if body is not None:
                chunk += body[:limit]
        elif body is not None:
            chunk = body[:limit]
        else:
            continue
        out.append(chunk)
        size += len(chunk)
    text = features.visible("".join(out))
    return text.encode("utf-8", "surrogatepass")[:limit]


def new_weights() -> array:
    return array("f", bytes(4 << BITS))


def rate(is_spam: bool) -> float:
    """The step size for a message of this class."""
    return RATE if is_spam else RATE * HAM_RATE
