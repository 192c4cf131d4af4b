# Included by _cdecode.pyx (Cython's textual include): its cimports, enums and globals are in scope.

# --- wire primitives ------------------------------------------------------------------------------

cdef inline int _varint(const unsigned char* buf, Py_ssize_t* pos, Py_ssize_t end, uint64_t* out) noexcept:
    """Up to ten bytes, as upb reads them (bits past the 64th dropped); UNSURE when longer or cut."""
    cdef Py_ssize_t p = pos[0]
    cdef uint64_t value = 0
    cdef int shift = 0
    cdef unsigned char byte
    while p < end:
        byte = buf[p]
        p += 1
        value |= (<uint64_t>(byte & 0x7F)) << shift
        if byte < 0x80:
            pos[0] = p
            out[0] = value
            return DONE
        shift += 7
        if shift > 63:
            return UNSURE
    return UNSURE


cdef inline int _short_varint(const unsigned char* buf, Py_ssize_t* pos, Py_ssize_t end, uint64_t* out) noexcept:
    """A tag or a length: at most five bytes and 31 bits, else UNSURE."""
    cdef Py_ssize_t start = pos[0]
    if _varint(buf, pos, end, out) != DONE:
        return UNSURE
    if pos[0] - start > 5 or out[0] > 0x7FFFFFFF:
        return UNSURE
    return DONE


cdef inline int _tag(const unsigned char* buf, Py_ssize_t* pos, Py_ssize_t end, uint32_t* field, int* wire_type) noexcept:
    cdef uint64_t tag
    if buf[pos[0]] < 0x80:
        # One-byte tags: every field this module knows.
        tag = buf[pos[0]]
        pos[0] += 1
    elif _short_varint(buf, pos, end, &tag) != DONE:
        return UNSURE
    field[0] = <uint32_t>(tag >> 3)
    wire_type[0] = <int>(tag & 7)
    if field[0] == 0:
        return UNSURE
    return DONE


cdef inline int _delimited(
    const unsigned char* buf, Py_ssize_t* pos, Py_ssize_t end, Py_ssize_t* start, Py_ssize_t* stop
) noexcept:
    """The payload of a length-delimited field whose tag was just read."""
    cdef uint64_t length
    if _short_varint(buf, pos, end, &length) != DONE:
        return UNSURE
    if <uint64_t>(end - pos[0]) < length:
        return UNSURE
    start[0] = pos[0]
    stop[0] = pos[0] + <Py_ssize_t>length
    pos[0] = stop[0]
    return DONE


cdef inline int _skip(const unsigned char* buf, Py_ssize_t* pos, Py_ssize_t end, int wire_type) noexcept:
    """Past an unknown field's value; groups and invalid wire types are UNSURE."""
    cdef uint64_t ignored
    cdef Py_ssize_t start, stop
    if wire_type == WT_VARINT:
        return _varint(buf, pos, end, &ignored)
    if wire_type == WT_FIXED64:
        if end - pos[0] < 8:
            return UNSURE
        pos[0] += 8
        return DONE
    if wire_type == WT_FIXED32:
        if end - pos[0] < 4:
            return UNSURE
        pos[0] += 4
        return DONE
    if wire_type == WT_LEN:
        return _delimited(buf, pos, end, &start, &stop)
    return UNSURE


cdef inline int32_t _zigzag32(uint64_t raw) noexcept:
    cdef uint32_t n = <uint32_t>raw
    return <int32_t>(n >> 1) ^ -(<int32_t>(n & 1))


cdef object _utf8(const unsigned char* buf, Py_ssize_t start, Py_ssize_t stop):
    """The text of a ``string`` field, or None when it is not valid UTF-8 (upb refuses it too)."""
    try:
        return PyUnicode_DecodeUTF8(<const char*>buf + start, stop - start, NULL)
    except UnicodeDecodeError:
        return None
