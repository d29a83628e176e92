"""Pure-Python twin of ``core.fast._ngram``: same steps, same floats, slower."""

from __future__ import annotations

import math
from array import array

MULTIPLIER = 2654435761
MAX_BITS = 24


def features(data: bytes, bits: int) -> array:
    """Distinct buckets of the 4-byte windows of ``data``, first seen first."""
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits is {bits}; allowed 1..{MAX_BITS}")
    shift = 32 - bits
    found: dict[int, None] = {}
    for i in range(len(data) - 3):
        window = int.from_bytes(data[i:i + 4], "big")
        found[((window * MULTIPLIER) & 0xFFFFFFFF) >> shift] = None
    return array("I", found)


def _dot(weights, idx) -> float:
    total = 0.0
    for i in idx:
        total = total + weights[i]
    return total


def _check(weights, idx) -> None:
    for i in idx:
        if i >= len(weights):
            raise ValueError(f"bucket {i} is past the {len(weights)} weights")


def score(weights, idx) -> float:
    """Log-odds of spam: the weights of ``idx`` summed, over sqrt(len(idx))."""
    _check(weights, idx)
    if not len(idx):
        return 0.0
    return _dot(weights, idx) / math.sqrt(len(idx))


def step(weights, idx, is_spam: bool, rate: float, margin: float) -> bool:
    """One logistic step unless the message is already right by ``margin``."""
    _check(weights, idx)
    n = len(idx)
    if not n:
        return False
    norm = math.sqrt(n)
    s = _dot(weights, idx) / norm
    p = 1.0 / (1.0 + math.exp(-s))
    gain = (1.0 - p) if is_spam else -p
    if -margin < gain < margin:
        return False
    gain = rate * gain / norm
    for i in idx:
        weights[i] = weights[i] + gain
    return True
