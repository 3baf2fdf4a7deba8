# Header-only helpers shared by the extensions: `cdef inline` so each .pyx gets its own copy
# (a cimport of another .pyx module from this flat ext/ would fail at import time, STYLE 10).

cdef extern from "Python.h":
    object PyUnicode_DecodeASCII(const char *s, Py_ssize_t size, const char *errors)
    object PyBytes_FromStringAndSize(const char *v, Py_ssize_t len)
    char* PyBytes_AS_STRING(object o)

cdef extern from "string.h":
    const void *memchr(const void *s, int c, size_t n) nogil
    void *memcpy(void *dest, const void *src, size_t n) nogil

cdef enum:
    SP = 0x20
    TAB = 0x09
    CR = 0x0D
    LF = 0x0A


cdef inline Py_ssize_t find_byte(const unsigned char *p, Py_ssize_t start, Py_ssize_t end,
                                 unsigned char c) nogil:
    """Index of `c` in p[start:end], or -1."""
    if start >= end:
        return -1
    cdef const unsigned char *hit = <const unsigned char *>memchr(p + start, c, end - start)
    return -1 if hit == NULL else hit - p


cdef inline bint is_alpha(unsigned char c) nogil:
    return (0x41 <= c <= 0x5A) or (0x61 <= c <= 0x7A)


cdef inline bint is_digit(unsigned char c) nogil:
    return 0x30 <= c <= 0x39


cdef inline unsigned char ascii_upper(unsigned char c) nogil:
    return c - 0x20 if 0x61 <= c <= 0x7A else c


cdef inline object upper_ascii_str(const unsigned char *p, Py_ssize_t n):
    """p[:n], known to be ASCII, as an upper-cased str; no copy when it is upper-case already."""
    cdef Py_ssize_t i
    for i in range(n):
        if 0x61 <= p[i] <= 0x7A:
            return PyUnicode_DecodeASCII(<const char *>p, n, NULL).upper()
    return PyUnicode_DecodeASCII(<const char *>p, n, NULL)
