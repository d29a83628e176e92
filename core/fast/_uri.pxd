# The compiled URI host scanner. Twin and rules: core/spam/uri_py.py.


cdef Py_ssize_t _read_host(
    const unsigned char *data,
    Py_ssize_t size,
    Py_ssize_t j,
    bint authority,
    unsigned char *buf,
    Py_ssize_t *length,
) noexcept nogil
