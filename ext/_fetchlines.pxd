cdef bytes date_time(double timestamp)
