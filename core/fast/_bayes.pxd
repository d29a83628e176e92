# The compiled scorer: token counts in an open-addressing table, Robinson's
# per-token estimate, Fisher's chi-square combining, logistic weights.
# Twin: core/spam/bayes_py.py.

from libc.stdint cimport int64_t, uint32_t


cdef struct _EntryC:
    # One slot: a token's counts and weight side by side, so a lookup
    # touches one cache line (the table is far bigger than the caches).
    int64_t key
    uint32_t ham
    uint32_t spam
    double weight


cdef struct _ClueC:
    double distance
    double prob
    int64_t token


cdef class CountTable:
    cdef _EntryC *slots
    cdef Py_ssize_t mask
    cdef Py_ssize_t used

    cdef int _grow(self, Py_ssize_t wanted) except -1
    cdef Py_ssize_t _slot(self, int64_t token) noexcept nogil
    cdef Py_ssize_t _insert(self, int64_t token) except -1
    cdef int _put(self, int64_t token, uint32_t ham, uint32_t spam) except -1


cdef double _chi2q(double x2, Py_ssize_t v) noexcept nogil
