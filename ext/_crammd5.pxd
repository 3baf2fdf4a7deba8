from libc.stdint cimport uint32_t

cdef void md5_compress(uint32_t state[4], const unsigned char *block) noexcept nogil
cdef void md5_finish(uint32_t state[4], const unsigned char *data, Py_ssize_t n,
                     unsigned char digest[16]) noexcept nogil
