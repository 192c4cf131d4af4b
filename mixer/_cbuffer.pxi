# An output buffer for the compiled encoders (mixer/spans/_cspan.pyx, mixer/_cline.pyx), and the
# protobuf primitives written into it. The includer cimports PyMem_Realloc, memcpy and the stdint
# types.

cdef struct _Buffer:
    char* data
    Py_ssize_t size
    Py_ssize_t capacity


cdef int _reserve(_Buffer* out, Py_ssize_t more) except -1:
    cdef Py_ssize_t wanted = out.size + more
    cdef Py_ssize_t capacity = out.capacity
    cdef char* data
    if wanted <= capacity:
        return 0
    while capacity < wanted:
        capacity *= 2
    data = <char*>PyMem_Realloc(out.data, capacity)
    if data == NULL:
        raise MemoryError()
    out.data = data
    out.capacity = capacity
    return 0


cdef int _put(_Buffer* out, const char* data, Py_ssize_t size) except -1:
    _reserve(out, size)
    memcpy(out.data + out.size, data, size)
    out.size += size
    return 0


cdef int _put_varint(_Buffer* out, uint64_t value) except -1:
    _reserve(out, 10)
    while value >= 0x80:
        out.data[out.size] = <char>((value & 0x7F) | 0x80)
        out.size += 1
        value >>= 7
    out.data[out.size] = <char>value
    out.size += 1
    return 0


cdef inline Py_ssize_t _varint_size(uint64_t value) nogil:
    cdef Py_ssize_t size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size


cdef int _put_fixed(_Buffer* out, uint64_t value, int width) except -1:
    # Little-endian, as protobuf writes fixed32 and fixed64 whatever the machine.
    cdef int i
    _reserve(out, width)
    for i in range(width):
        out.data[out.size + i] = <char>((value >> (8 * i)) & 0xFF)
    out.size += width
    return 0


cdef int _put_field(_Buffer* out, uint8_t tag, const char* data, Py_ssize_t size) except -1:
    # A length-delimited field with a one-byte tag (field numbers below 16).
    _reserve(out, 1)
    out.data[out.size] = <char>tag
    out.size += 1
    _put_varint(out, <uint64_t>size)
    _put(out, data, size)
    return 0


cdef int _start(_Buffer* out, Py_ssize_t capacity) except -1:
    out.data = <char*>PyMem_Malloc(capacity)
    if out.data == NULL:
        raise MemoryError()
    out.size = 0
    out.capacity = capacity
    return 0
