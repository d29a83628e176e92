"""Compiled character 4-gram model: features, score and one training step.

Private: ``core.spam.ngram`` builds the text and keeps the weights; this
module hashes every 4-byte window of it into a bucket of a fixed-size
weight array, scores the normalised binary vector of the buckets met and
takes one logistic-regression step. Each function mirrors
``core/spam/ngram_py.py`` (the twin) step for step, so both give the same
floats.
"""

from cpython.array cimport array, clone, resize
from libc.math cimport exp, sqrt
from libc.stdint cimport uint32_t

# Knuth's multiplicative hash constant (2^32 / golden ratio).
cdef uint32_t MULTIPLIER = 2654435761u

cdef array _INDEX_TEMPLATE = array("I")

# One bit per bucket, for picking each bucket once. Module-wide and used with
# the GIL held, so calls never share it; every call clears what it set.
DEF MAX_BITS = 24
cdef unsigned char _seen[1 << (MAX_BITS - 3)]


def features(const unsigned char[:] data, int bits):
    """Distinct buckets of the 4-byte windows of ``data``, first seen first."""
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits is {bits}; allowed 1..{MAX_BITS}")
    cdef Py_ssize_t n = data.shape[0]
    cdef Py_ssize_t count = n - 3 if n > 3 else 0
    cdef array out = clone(_INDEX_TEMPLATE, count, False)
    cdef uint32_t *idx = out.data.as_uints
    cdef uint32_t window, bucket
    cdef int shift = 32 - bits
    cdef Py_ssize_t i, kept = 0
    for i in range(count):
        window = ((<uint32_t>data[i] << 24) | (<uint32_t>data[i + 1] << 16)
                  | (<uint32_t>data[i + 2] << 8) | <uint32_t>data[i + 3])
        bucket = <uint32_t>(window * MULTIPLIER) >> shift
        if not (_seen[bucket >> 3] & (1 << (bucket & 7))):
            _seen[bucket >> 3] |= 1 << (bucket & 7)
            idx[kept] = bucket
            kept += 1
    for i in range(kept):
        _seen[idx[i] >> 3] = 0
    resize(out, kept)
    return out


cdef double _dot(const float[:] weights, const uint32_t[:] idx) noexcept nogil:
    # Left to right, in double, as the twin adds.
    cdef double total = 0.0
    cdef Py_ssize_t i
    for i in range(idx.shape[0]):
        total = total + weights[idx[i]]
    return total


cdef int _check(const float[:] weights, const uint32_t[:] idx) except -1:
    # Bounds checks are off in core/fast: a bucket past the array is refused.
    cdef Py_ssize_t i
    cdef Py_ssize_t size = weights.shape[0]
    for i in range(idx.shape[0]):
        if idx[i] >= size:
            raise ValueError(f"bucket {idx[i]} is past the {size} weights")
    return 0


def score(const float[:] weights, const uint32_t[:] idx):
    """Log-odds of spam: the weights of ``idx`` summed, over sqrt(len(idx))."""
    cdef Py_ssize_t n = idx.shape[0]
    _check(weights, idx)
    if n == 0:
        return 0.0
    return _dot(weights, idx) / sqrt(<double>n)


def step(float[:] weights, const uint32_t[:] idx, bint is_spam, double rate,
         double margin):
    """One logistic step unless the message is already right by ``margin``.

    ``margin`` is a probability distance: no step when the predicted
    probability of the true class is above 1 - margin. Returns whether a
    step was taken.
    """
    cdef Py_ssize_t n = idx.shape[0]
    cdef Py_ssize_t i
    cdef double norm, s, p, gain
    _check(weights, idx)
    if n == 0:
        return False
    norm = sqrt(<double>n)
    s = _dot(weights, idx) / norm
    p = 1.0 / (1.0 + exp(-s))
    gain = (1.0 - p) if is_spam else -p
    if gain < margin and gain > -margin:
        return False
    gain = rate * gain / norm
    for i in range(n):
        weights[idx[i]] = weights[idx[i]] + gain
    return True
