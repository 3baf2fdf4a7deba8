cdef class CommandParser:
    cdef public Py_ssize_t max_literal, max_line, max_depth
    cdef readonly bint wants_continuation
    cdef bytearray _line
    cdef object _literal  # a bytearray while a literal is being read, else None
    cdef Py_ssize_t _literal_left
    cdef bint _skipping, _discarding, _need_sep, _sections, _literal_binary
    cdef object _tag
    cdef str _name
    cdef list _stack

    cdef void _reset(self)
    cdef object _feed(self, const unsigned char *p, Py_ssize_t end)
    cdef Py_ssize_t _take_literal(self, const unsigned char *p, Py_ssize_t pos,
                                  Py_ssize_t end) except -1
    cdef object _end_of_line(self, const unsigned char *body, Py_ssize_t n, Py_ssize_t consumed)
    cdef int _skip_literal_tail(self, const unsigned char *body, Py_ssize_t n) except -1
    cdef object _tokenize(self, const unsigned char *body, Py_ssize_t n)
    cdef Py_ssize_t _header(self, const unsigned char *body, Py_ssize_t n) except -1
    cdef Py_ssize_t _quoted(self, const unsigned char *body, Py_ssize_t n,
                            Py_ssize_t pos) except -1
    cdef int _literal_header(self, const unsigned char *body, Py_ssize_t n,
                             Py_ssize_t pos, bint binary) except -1
    cdef Py_ssize_t _atom(self, const unsigned char *body, Py_ssize_t n,
                          Py_ssize_t pos) except -1
