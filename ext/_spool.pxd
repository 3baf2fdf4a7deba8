cdef class DotUnstuffer:
    cdef readonly bint done, bare_newline
    cdef int _state
    cdef int _held  # 1: a "." at line start, 2: ".\r", not yet known to be data or the end

    cdef tuple _scan(self, bytes data, const unsigned char *p, Py_ssize_t n, int held, int state,
                     bint bare, Py_ssize_t chunk_len, char **out)


cdef class CrlfToLf:
    cdef bint _held_cr
