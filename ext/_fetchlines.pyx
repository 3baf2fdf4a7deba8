# cython: boundscheck=False, wraparound=False
"""FETCH responses for many messages at once: the compiled twin of
mailforge.speedups.fetchlines, whose docstring explains plans and item codes. Each line is
assembled in one C buffer; INTERNALDATE is formatted with gmtime_r, not time.gmtime."""

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.math cimport floor
from libc.stdio cimport snprintf
from libc.time cimport time_t, tm

import time

__all__ = ["UID", "FLAGS", "INTERNALDATE", "RFC822_SIZE", "ENVELOPE", "BODY", "BODYSTRUCTURE",
           "MODSEQ", "SUMMARY_CODES", "render_fetch", "format_date_time"]

cdef extern from "<time.h>" nogil:
    tm *gmtime_r(const time_t *timep, tm *result)

cdef enum:
    C_UID = 0
    C_FLAGS = 1
    C_INTERNALDATE = 2
    C_RFC822_SIZE = 3
    C_ENVELOPE = 4
    C_BODY = 5
    C_BODYSTRUCTURE = 6
    C_MODSEQ = 7

UID = C_UID
FLAGS = C_FLAGS
INTERNALDATE = C_INTERNALDATE
RFC822_SIZE = C_RFC822_SIZE
ENVELOPE = C_ENVELOPE
BODY = C_BODY
BODYSTRUCTURE = C_BODYSTRUCTURE
MODSEQ = C_MODSEQ
SUMMARY_CODES = frozenset((C_ENVELOPE, C_BODY, C_BODYSTRUCTURE))

cdef const char *MONTHS[12]
MONTHS[:] = [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct",
             b"Nov", b"Dec"]


cdef bytes date_time(double timestamp):
    cdef time_t seconds = <time_t>floor(timestamp)
    cdef tm moment
    cdef char out[48]
    if gmtime_r(&seconds, &moment) == NULL or not 0 <= moment.tm_year + 1900 <= 9999:
        # What time.gmtime says of such a date (an OverflowError or OSError), as the twin does.
        time.gmtime(timestamp)
        raise OverflowError("timestamp out of range for INTERNALDATE")
    cdef int n = snprintf(out, sizeof(out), b'"%2d-%s-%04d %02d:%02d:%02d +0000"',
                          moment.tm_mday, MONTHS[moment.tm_mon], moment.tm_year + 1900,
                          moment.tm_hour, moment.tm_min, moment.tm_sec)
    return PyBytes_FromStringAndSize(out, n)


def format_date_time(timestamp: float) -> bytes:
    """INTERNALDATE as RFC 3501 date-time: `"25-Nov-2026 16:29:44 +0000"`, always UTC."""
    return date_time(timestamp)


cdef bytes number_item(bytes label, long long value, bint parenthesised):
    cdef char digits[32]
    cdef int n = snprintf(digits, sizeof(digits), b"(%lld)" if parenthesised else b"%lld",
                          value)
    return label + PyBytes_FromStringAndSize(digits, n)


def render_fetch(targets, plan, summary_of, fallback, flags_item, bint recent):
    """The FETCH lines of `targets` and how many of them `fallback` found gone (see the twin)."""
    cdef list lines = []
    cdef list parts
    cdef Py_ssize_t gone = 0
    cdef object seq, info, summary, entry, line
    cdef int code
    cdef tuple steps = tuple(plan)
    for seq, info in targets:
        summary = None
        if summary_of is not None:
            summary = summary_of(info.uid)
            if summary is None:
                line = fallback(seq, info)
                if line is None:
                    gone += 1
                else:
                    lines.append(line)
                continue
        parts = []
        for entry in steps:
            if type(entry) is not int:
                parts.append(entry(info, summary))
                continue
            code = entry
            if code == C_UID:
                parts.append(number_item(b"UID ", info.uid, False))
            elif code == C_FLAGS:
                parts.append(flags_item(info.flags, recent and info.recent))
            elif code == C_INTERNALDATE:
                parts.append(b"INTERNALDATE " + date_time(info.internal_date))
            elif code == C_RFC822_SIZE:
                parts.append(number_item(b"RFC822.SIZE ", info.size, False))
            elif code == C_ENVELOPE:
                parts.append(b"ENVELOPE " + summary.envelope)
            elif code == C_BODY:
                parts.append(b"BODY " + summary.body)
            elif code == C_BODYSTRUCTURE:
                parts.append(b"BODYSTRUCTURE " + summary.bodystructure)
            elif code == C_MODSEQ:
                parts.append(number_item(b"MODSEQ ", info.modseq, True))
        lines.append(number_item(b"* ", seq, False) + b" FETCH (" + b" ".join(parts) + b")\r\n")
    return b"".join(lines), gone
