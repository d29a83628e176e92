"""Compiled URI host scanner: host candidates in text.

Private: ``core.spam.uris`` calls ``hosts`` and decodes the candidates.
Each step mirrors ``core/spam/uri_py.py`` (the twin), which states the rules.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE

from core.spam import uri_py as _twin

cdef enum:
    _MAX_HOST = 253

cdef unsigned char _HOST[256]
cdef bytes _table = _twin.HOST
cdef int _c
for _c in range(256):
    _HOST[_c] = _table[_c]


cdef inline bint _is_open(unsigned char c) noexcept nogil:
    return c == 91 or c == 40 or c == 123


cdef inline bint _is_close(unsigned char c) noexcept nogil:
    return c == 93 or c == 41 or c == 125


cdef Py_ssize_t _read_host(
    const unsigned char *data,
    Py_ssize_t size,
    Py_ssize_t j,
    bint authority,
    unsigned char *buf,
    Py_ssize_t *length,
) noexcept nogil:
    """Read a host from data[j] into buf; its length (-1: too long) and the end."""
    cdef Py_ssize_t n = 0
    cdef bint too_long = False
    cdef unsigned char c
    while j < size:
        c = data[j]
        if _HOST[c]:
            if n < _MAX_HOST:
                buf[n] = c + 32 if 65 <= c <= 90 else c
                n += 1
            else:
                too_long = True
            j += 1
            continue
        if (_is_open(c) and j + 2 < size and data[j + 1] == 46
                and _is_close(data[j + 2])):
            if n < _MAX_HOST:
                buf[n] = 46
                n += 1
            else:
                too_long = True
            j += 3
            continue
        if (c == 32 and n > 0 and j + 3 < size and data[j + 1] == 46
                and data[j + 2] == 32 and _HOST[data[j + 3]]):
            if n < _MAX_HOST:
                buf[n] = 46
                n += 1
            else:
                too_long = True
            j += 3
            continue
        if c == 64 and authority and n > 0:
            n = 0
            too_long = False
            j += 1
            continue
        break
    length[0] = -1 if too_long else n
    return j


def hosts(bytes data, Py_ssize_t cap=_twin.MAX_CANDIDATES):
    """(host, after "://") candidates of data in order, at most cap."""
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(data)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t i = 0
    cdef Py_ssize_t j, k, skipped, length
    cdef unsigned char buf[_MAX_HOST + 1]
    cdef bint dotted
    cdef list out = []
    while i < size and len(out) < cap:
        if p[i] == 58 and i + 2 < size and p[i + 1] == 47 and p[i + 2] == 47:
            j = i + 3
            skipped = 0
            while j < size and p[j] == 32 and skipped < 3:
                j += 1
                skipped += 1
            j = _read_host(p, size, j, True, buf, &length)
            if length > 0:
                out.append(((<char *>buf)[:length], True))
            i = j if j > i + 3 else i + 3
            continue
        if _HOST[p[i]] and (i == 0 or not _HOST[p[i - 1]]):
            j = _read_host(p, size, i, False, buf, &length)
            dotted = False
            for k in range(length if length > 0 else 0):
                if buf[k] == 46:
                    dotted = True
                    break
            if dotted:
                out.append(((<char *>buf)[:length], False))
            i = j if j > i + 1 else i + 1
            continue
        i += 1
    return out
