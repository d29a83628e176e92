# The compiled tokenizer: segments of a message to 64-bit token hashes.
# Rules: core/spam/tokenspec.py; pure-Python twin: core/spam/tokenize_py.py.

from libc.stdint cimport int64_t, uint64_t


cdef struct _OptsC:
    Py_ssize_t window
    Py_ssize_t min_len
    Py_ssize_t max_len


cdef enum:
    # Up to this many wanted hashes are matched in C, without a set lookup
    # (and a Python integer) per emitted token.
    _FEW_WANTED = 32


cdef class _Sink:
    cdef int64_t *out
    cdef Py_ssize_t count
    cdef Py_ssize_t cap
    cdef Py_ssize_t limit  # where the segment being read must stop
    cdef object wanted  # set of hashes to name, or None
    cdef int64_t few[_FEW_WANTED]  # the wanted hashes, when they fit
    cdef Py_ssize_t nfew  # how many of few are used; -1: look in wanted
    cdef dict names
    cdef int64_t last

    cdef int emit(self, uint64_t value) except -1
    cdef int name(self, bytes text) except -1


cdef int _words(
    _Sink sink,
    const unsigned char *text,
    Py_ssize_t size,
    uint64_t base,
    bytes prefix,
    _OptsC *opts,
) except -1

cdef int _crack(
    _Sink sink,
    const unsigned char *word,
    Py_ssize_t size,
    bytes kind,
    uint64_t base,
    bytes prefix,
    _OptsC *opts,
) except -1

cdef int _tag_urls(
    _Sink sink,
    const unsigned char *data,
    Py_ssize_t e,
    Py_ssize_t k,
    uint64_t base,
    bytes prefix,
    _OptsC *opts,
) except -1

cdef Py_ssize_t _strip_html(
    _Sink sink,
    const unsigned char *data,
    Py_ssize_t size,
    unsigned char *out,
    uint64_t base,
    bytes prefix,
    _OptsC *opts,
) except -1
