# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled fast path of the CheckResponse writer (mixer/wire/_check.py): a Check's precondition
result straight into protobuf bytes.

mixer/wire/_check.py stays the definition of the response (:func:`encode_check_response`, whose
tests compare it with protobuf's own serializer). This module writes the ``precondition`` field of
the common answer: status code and message, validity, use count, the referenced attributes (their
bytes come from the caller's memo) and the route directive's header operations. It returns None for
what it leaves to Python: a duration that is not an exact ``timedelta`` (a nanosecond duration),
or one outside what the Python writer accepts; a header operation or status whose fields do not
have the exact types; then the caller writes the whole answer in Python, which writes it or raises
as it always did.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.datetime cimport (
    PyDelta_CheckExact,
    import_datetime,
    timedelta_days,
    timedelta_microseconds,
    timedelta_seconds,
)
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.unicode cimport PyUnicode_CheckExact
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.string cimport memcpy

import_datetime()

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object text, Py_ssize_t* size) except NULL
    bint PyLong_Check(object value)
    bint PyList_CheckExact(object value)
    long long PyLong_AsLongLongAndOverflow(object value, int* overflow) except? -1

include "../_cbuffer.pxi"

# google.protobuf.Duration's range, as mixer/wire/_encode.py checks it.
cdef int64_t _MAX_DURATION_SECONDS = 315_576_000_000
cdef int64_t _MAX_DURATION_DAYS = 315_576_000_000 // 86400 + 1


cdef int _put_varint_field(_Buffer* out, uint8_t tag, uint64_t value) except -1:
    _reserve(out, 1)
    out.data[out.size] = <char>tag
    out.size += 1
    _put_varint(out, value)
    return 0


cdef int _put_text_field(_Buffer* out, uint8_t tag, object text) except -1:
    # An exact str, checked by the caller; empty strings are not written, as proto3 leaves them out.
    cdef Py_ssize_t size
    cdef const char* data = PyUnicode_AsUTF8AndSize(text, &size)
    if size:
        _put_field(out, tag, data, size)
    return 0


cdef int _small_int(object value, int64_t* result) except -1:
    # 1 for an int within int64 (an IntEnum too), else 0: Python writes the rest (or refuses it).
    cdef int overflow = 0
    cdef long long number
    if not PyLong_Check(value) or isinstance(value, bool):
        return 0
    number = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow:
        return 0
    result[0] = number
    return 1


cdef int _duration(_Buffer* out, object value) except -1:
    # 1 when written, 0 when Python must: Duration's seconds (1) and nanos (2), of one sign.
    cdef int64_t total_us, seconds, nanos
    if not PyDelta_CheckExact(value):
        return 0
    if timedelta_days(value) > _MAX_DURATION_DAYS or timedelta_days(value) < -_MAX_DURATION_DAYS:
        # Beyond Duration's range (and int64 microseconds): Python refuses it.
        return 0
    total_us = (<int64_t>timedelta_days(value) * 86400 + timedelta_seconds(value)) * 1_000_000
    total_us += timedelta_microseconds(value)
    if total_us < 0:
        seconds = -((-total_us) // 1_000_000)
        nanos = -(((-total_us) % 1_000_000) * 1000)
    else:
        seconds = total_us // 1_000_000
        nanos = (total_us % 1_000_000) * 1000
    if seconds > _MAX_DURATION_SECONDS or seconds < -_MAX_DURATION_SECONDS:
        return 0
    if seconds:
        _put_varint_field(out, 0x08, <uint64_t>seconds)
    if nanos:
        _put_varint_field(out, 0x10, <uint64_t>nanos)
    return 1


cdef int _nested(_Buffer* out, uint8_t tag, _Buffer* inner) except -1:
    _put_field(out, tag, inner.data, inner.size)
    return 0


cdef int _header_ops(_Buffer* route, uint8_t tag, object ops) except -1:
    # HeaderOperation: name (1), value (2), operation (3). 1 when written, 0 when Python must.
    cdef Py_ssize_t i, n
    cdef _Buffer op
    cdef int64_t kind
    cdef object item, name, value
    if not PyList_CheckExact(ops):
        return 0
    n = PyList_GET_SIZE(ops)
    if n == 0:
        return 1
    _start(&op, 128)
    try:
        for i in range(n):
            item = <object>PyList_GET_ITEM(ops, i)
            name = item.name
            value = item.value
            if not PyUnicode_CheckExact(name) or not PyUnicode_CheckExact(value):
                return 0
            if not _small_int(item.operation, &kind):
                return 0
            op.size = 0
            _put_text_field(&op, 0x0A, name)
            _put_text_field(&op, 0x12, value)
            if kind:
                _put_varint_field(&op, 0x18, <uint64_t>kind)
            _nested(route, tag, &op)
    finally:
        PyMem_Free(op.data)
    return 1


def precondition(object outcome, object referenced_bytes):
    """The ``precondition`` field (2) of the CheckResponse for ``outcome``, tag included, when no
    details and no direct response go with it; None for what Python must write.

    ``referenced_bytes`` writes (or finds) the ReferencedAttributes of a list of matches.
    """
    cdef _Buffer body, route
    cdef int64_t code, uses
    cdef object status = outcome.status
    cdef object message = status.message
    cdef object referenced = outcome.referenced
    cdef object written
    cdef object result = None
    if not PyUnicode_CheckExact(message) or not _small_int(status.code, &code):
        return None
    if not _small_int(outcome.valid_use_count, &uses):
        return None
    _start(&body, 256)
    _start(&route, 256)
    try:
        # google.rpc.Status: code (1), message (2).
        if code:
            _put_varint_field(&route, 0x08, <uint64_t>code)
        _put_text_field(&route, 0x12, message)
        _nested(&body, 0x0A, &route)
        route.size = 0
        if not _duration(&route, outcome.valid_duration):
            return None
        _nested(&body, 0x12, &route)
        if uses:
            _put_varint_field(&body, 0x18, <uint64_t>uses)
        if referenced:
            written = referenced_bytes(referenced)
            if type(written) is not bytes:
                return None
            _put_field(&body, 0x2A, PyBytes_AS_STRING(written), PyBytes_GET_SIZE(written))
        route.size = 0
        if not _header_ops(&route, 0x0A, outcome.request_header_operations):
            return None
        if not _header_ops(&route, 0x12, outcome.response_header_operations):
            return None
        if route.size:
            _nested(&body, 0x32, &route)
        route.size = 0
        _nested(&route, 0x12, &body)
        result = PyBytes_FromStringAndSize(route.data, route.size)
    finally:
        PyMem_Free(body.data)
        PyMem_Free(route.data)
    return result
