# cython: boundscheck=False, wraparound=False, cdivision=True
"""Queue and store IO hot path: the compiled twin of mailforge.speedups.spool.

DATA decoding and CRLF→LF run in one pass over each chunk and return the chunk itself
(no copy) when nothing in it changes. File writes run without the GIL.
"""

import os

from libc.errno cimport errno, EINTR
from libc.string cimport memchr, memcpy
from posix.unistd cimport write as c_write

from cpython.mem cimport PyMem_Malloc, PyMem_Free
from _bytes cimport CR, LF, PyBytes_FromStringAndSize, PyBytes_AS_STRING

__all__ = ["DotUnstuffer", "CrlfToLf", "write_all"]

cdef enum State:
    MID          # inside a line
    AFTER_CR     # a CR was the last byte
    BOL          # at a line start (just after CRLF, or at the start of the data)
    BOL_DOT      # "." at a line start
    BOL_DOT_CR   # ".\r" at a line start: one LF more is the end of data


cdef class DotUnstuffer:
    """See mailforge.speedups.dotstuff. Holds back at most the ".\r" of a possible end."""

    def __cinit__(self):
        self._state = BOL

    def feed(self, bytes chunk):
        cdef int held = self._held
        cdef bytes data = (b"."[:held] if held == 1 else b".\r") + chunk if held else chunk
        cdef const unsigned char *p = data
        cdef Py_ssize_t n = len(data)
        cdef int state = BOL if held else self._state
        cdef bint bare = self.bare_newline
        cdef char *out = NULL  # only once a dot is dropped: the output is no longer a slice
        cdef unsigned char c
        self._held = 0
        try:
            return self._scan(data, p, n, held, state, bare, len(chunk), &out)
        finally:
            PyMem_Free(out)

    cdef tuple _scan(self, bytes data, const unsigned char *p, Py_ssize_t n, int held, int state,
                     bint bare, Py_ssize_t chunk_len, char **out):
        cdef Py_ssize_t i = 0, stop, copy_from = 0, out_len = 0, emit_end
        cdef const unsigned char *hit
        cdef unsigned char c
        while i < n:
            if state == MID:  # the long stretch: find the line's CR, note any LF before it
                hit = <const unsigned char *>memchr(p + i, CR, n - i)
                stop = n if hit == NULL else hit - p
                if not bare and memchr(p + i, LF, stop - i) != NULL:
                    bare = True
                i = stop
                if i == n:
                    break
                state = AFTER_CR
                i += 1
                continue
            c = p[i]
            if state == AFTER_CR:
                if c == LF:
                    state = BOL
                elif c != CR:
                    bare, state = True, MID
                else:
                    bare = True
            elif state == BOL:
                if c == b'.':
                    state = BOL_DOT
                elif c == CR:
                    state = AFTER_CR
                else:
                    bare = bare or c == LF
                    state = MID
            elif state == BOL_DOT:
                if c == CR:
                    state = BOL_DOT_CR
                else:
                    if c == b'.':  # "\r\n.." → "\r\n.": the first dot goes
                        if out[0] == NULL:
                            out[0] = <char *>PyMem_Malloc(n)
                            if out[0] == NULL:
                                raise MemoryError()
                        memcpy(out[0] + out_len, p + copy_from, i - 1 - copy_from)
                        out_len += i - 1 - copy_from
                        copy_from = i
                    bare = bare or c == LF
                    state = MID
            else:  # BOL_DOT_CR
                if c == LF:
                    self.done = True
                    self.bare_newline = bare
                    return _result(data, out[0], out_len, copy_from, i - 2), i + 1 - held
                bare = True
                state = AFTER_CR if c == CR else MID
            i += 1
        emit_end = n
        if state == BOL_DOT or state == BOL_DOT_CR:
            self._held = 1 if state == BOL_DOT else 2
            emit_end -= self._held
        self._state = state
        self.bare_newline = bare
        return _result(data, out[0], out_len, copy_from, emit_end), chunk_len

cdef bytes _result(bytes data, char *out, Py_ssize_t out_len, Py_ssize_t copy_from,
                   Py_ssize_t end):
    if out == NULL:
        return data if copy_from == 0 and end == len(data) else data[copy_from:end]
    memcpy(out + out_len, <const char *>data + copy_from, end - copy_from)
    return PyBytes_FromStringAndSize(out, out_len + end - copy_from)


cdef class CrlfToLf:
    """See mailforge.speedups.spool.CrlfToLf."""

    def feed(self, bytes chunk):
        cdef Py_ssize_t n = len(chunk)
        if not n:
            return b""
        cdef const unsigned char *p = chunk
        cdef bint prefix = self._held_cr and p[0] != LF
        self._held_cr = p[n - 1] == CR
        if self._held_cr:
            n -= 1
        return _crlf_to_lf(p, n, prefix, chunk if n == len(chunk) else None)

    def flush(self):
        held, self._held_cr = self._held_cr, False
        return b"\r" if held else b""


cdef bytes _crlf_to_lf(const unsigned char *p, Py_ssize_t n, bint prefix, bytes whole):
    """p[:n] with each CRLF made LF, after a CR if `prefix`; `whole` is p[:n] as bytes, if so."""
    cdef Py_ssize_t crlf = _count_crlf(p, n), pos = 0, cr, out_len = 0
    if not crlf and not prefix:
        return whole if whole is not None else PyBytes_FromStringAndSize(<const char *>p, n)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n - crlf + prefix)
    cdef char *dst = PyBytes_AS_STRING(out)
    cdef const unsigned char *hit
    if prefix:
        dst[0] = CR
        out_len = 1
    with nogil:
        hit = <const unsigned char *>memchr(p, CR, n)
        while hit != NULL:
            cr = hit - p
            if cr + 1 < n and hit[1] == LF:
                memcpy(dst + out_len, p + pos, cr - pos)
                out_len += cr - pos
                pos = cr + 1
            hit = <const unsigned char *>memchr(p + cr + 1, CR, n - cr - 1)
        memcpy(dst + out_len, p + pos, n - pos)
    return out


cdef Py_ssize_t _count_crlf(const unsigned char *p, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t count = 0, cr
    cdef const unsigned char *hit = <const unsigned char *>memchr(p, CR, n)
    while hit != NULL:
        cr = hit - p
        if cr + 1 < n and hit[1] == LF:
            count += 1
        hit = <const unsigned char *>memchr(p + cr + 1, CR, n - cr - 1)
    return count


cdef int _write_all(int fd, const char *data, Py_ssize_t n) noexcept nogil:
    """0, or the errno of the failed write."""
    cdef Py_ssize_t done = 0, written
    while done < n:
        written = c_write(fd, data + done, n - done)
        if written < 0:
            if errno == EINTR:
                continue
            return errno
        done += written
    return 0


cdef _raise(int err, path):
    raise OSError(err, os.strerror(err), path)


def write_all(int fd, bytes data):
    cdef const char *p = data
    cdef Py_ssize_t n = len(data)
    cdef int err
    with nogil:
        err = _write_all(fd, p, n)
    if err:
        _raise(err, None)
