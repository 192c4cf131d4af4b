# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled fast path of the access-log line (mixer/encoding.py): a log entry's fields straight
into the JSON object of Mixer's stdio line.

mixer/encoding.py stays the definition of every line: the ``json`` module's spelling
(``ensure_ascii=False``, compact separators, fields sorted, absent ones and the header names left
out), times, durations and IP addresses as text. This module writes the common fields (exact str,
int, bool, float, the text kinds, dicts of str) and returns None on anything else (a lone
surrogate, another type, a key that is not a str); the caller then prepares the same fields in
Python, which writes or refuses them as it always did.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.datetime cimport (
    PyDateTime_CheckExact,
    PyDateTime_DATE_GET_HOUR,
    PyDateTime_DATE_GET_MICROSECOND,
    PyDateTime_DATE_GET_MINUTE,
    PyDateTime_DATE_GET_SECOND,
    PyDateTime_GET_DAY,
    PyDateTime_GET_MONTH,
    PyDateTime_GET_YEAR,
    datetime_tzinfo,
    import_datetime,
)
from cpython.dict cimport PyDict_CheckExact, PyDict_GetItem
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_CheckExact
from libc.math cimport isinf, isnan
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.stdio cimport snprintf
from libc.string cimport memcpy

import_datetime()

cdef extern from "Python.h":
    # NULL with an exception set (a lone surrogate): the caller clears it and leaves the text to Python.
    const char* PyUnicode_AsUTF8AndSize(object text, Py_ssize_t* size)
    void PyErr_Clear()
    # Exact str objects only (every caller checks first).
    bint PyUnicode_IS_ASCII(object text)
    void* PyUnicode_DATA(object text)
    Py_ssize_t PyUnicode_GET_LENGTH(object text)
    bint PyLong_CheckExact(object value)
    bint PyFloat_CheckExact(object value)
    long long PyLong_AsLongLongAndOverflow(object value, int* overflow) except? -1
    double PyFloat_AS_DOUBLE(object value)

include "_cbuffer.pxi"

# Set once by configure(): what mixer/encoding.py writes times, durations and addresses with.
cdef object _utc = None
cdef object _text_of = None
cdef frozenset _text_kinds = frozenset()
cdef const char* _HEX = "0123456789abcdef"


def configure(object utc, object text_of, frozenset text_kinds not None):
    """Hand over UTC, the text forms of times, durations and addresses, and their exact types (see
    mixer/_cline.pyi)."""
    global _utc, _text_of, _text_kinds
    _utc = utc
    _text_of = text_of
    _text_kinds = text_kinds


cdef int _put_json_string(_Buffer* out, object text) except -1:
    """``text`` as the ``json`` module writes it with ensure_ascii=False; 1 for a lone surrogate."""
    cdef Py_ssize_t size, i, run = 0
    cdef const char* chars
    cdef uint8_t c
    if PyUnicode_IS_ASCII(text):
        # A compact ASCII string's characters are its UTF-8 bytes.
        chars = <const char*>PyUnicode_DATA(text)
        size = PyUnicode_GET_LENGTH(text)
    else:
        chars = PyUnicode_AsUTF8AndSize(text, &size)
        if chars == NULL:
            PyErr_Clear()
            return 1
    _reserve(out, size + 2)
    out.data[out.size] = b'"'
    out.size += 1
    for i in range(size):
        c = <uint8_t>chars[i]
        if c >= 0x20 and c != 0x22 and c != 0x5C:
            continue
        _put(out, chars + run, i - run)
        run = i + 1
        if c == 0x22:
            _put(out, b'\\"', 2)
        elif c == 0x5C:
            _put(out, b"\\\\", 2)
        elif c == 0x0A:
            _put(out, b"\\n", 2)
        elif c == 0x0D:
            _put(out, b"\\r", 2)
        elif c == 0x09:
            _put(out, b"\\t", 2)
        elif c == 0x08:
            _put(out, b"\\b", 2)
        elif c == 0x0C:
            _put(out, b"\\f", 2)
        else:
            _reserve(out, 6)
            memcpy(out.data + out.size, b"\\u00", 4)
            out.data[out.size + 4] = _HEX[c >> 4]
            out.data[out.size + 5] = _HEX[c & 0xF]
            out.size += 6
    _put(out, chars + run, size - run)
    _put(out, b'"', 1)
    return 0


cdef int _put_time(_Buffer* out, object moment) except -1:
    """mixer.encoding.format_time for a UTC or naive datetime, quoted; 1 for any other zone."""
    cdef char text[40]
    cdef int size
    zone = datetime_tzinfo(moment)
    if zone is not None and zone is not _utc:
        return 1
    size = snprintf(
        text, sizeof(text), '"%04d-%02d-%02dT%02d:%02d:%02d.%06dZ"',
        PyDateTime_GET_YEAR(moment), PyDateTime_GET_MONTH(moment), PyDateTime_GET_DAY(moment),
        PyDateTime_DATE_GET_HOUR(moment), PyDateTime_DATE_GET_MINUTE(moment),
        PyDateTime_DATE_GET_SECOND(moment), PyDateTime_DATE_GET_MICROSECOND(moment),
    )
    _put(out, text, size)
    return 0


cdef int _put_value(_Buffer* out, object value) except -1:
    """One JSON value as the ``json`` module writes it; 1 when Python must decide."""
    cdef char digits[24]
    cdef long long number
    cdef int overflow = 0, size
    cdef double real
    cdef bytes encoded
    cdef bint first = True
    if PyUnicode_CheckExact(value):
        return _put_json_string(out, value)
    if value is True:
        _put(out, b"true", 4)
        return 0
    if value is False:
        _put(out, b"false", 5)
        return 0
    if PyLong_CheckExact(value):
        number = PyLong_AsLongLongAndOverflow(value, &overflow)
        if overflow == 0:
            size = snprintf(digits, sizeof(digits), "%lld", number)
            _put(out, digits, size)
        else:
            encoded = str(value).encode()
            _put(out, PyBytes_AS_STRING(encoded), PyBytes_GET_SIZE(encoded))
        return 0
    if PyFloat_CheckExact(value):
        real = PyFloat_AS_DOUBLE(value)
        if isnan(real):
            _put(out, b"NaN", 3)
        elif isinf(real):
            _put(out, b"Infinity" if real > 0 else b"-Infinity", 8 if real > 0 else 9)
        else:
            encoded = repr(value).encode()
            _put(out, PyBytes_AS_STRING(encoded), PyBytes_GET_SIZE(encoded))
        return 0
    if PyDateTime_CheckExact(value) and _put_time(out, value) == 0:
        return 0
    if type(value) in _text_kinds:
        return _put_json_string(out, _text_of(value))
    if PyDict_CheckExact(value):
        # A string map, in its own order (the json module does not sort nested maps).
        _put(out, b"{", 1)
        for key, item in (<dict>value).items():
            if not PyUnicode_CheckExact(key) or not PyUnicode_CheckExact(item):
                return 1
            if not first:
                _put(out, b",", 1)
            first = False
            if _put_json_string(out, key) or _put(out, b":", 1) or _put_json_string(out, item):
                return 1
        _put(out, b"}", 1)
        return 0
    return 1


cdef inline bint _is_header(str key):
    # level, time and instance: compared only when the length matches.
    cdef Py_ssize_t length = PyUnicode_GET_LENGTH(key)
    if length == 4:
        return key == "time"
    if length == 5:
        return key == "level"
    if length == 8:
        return key == "instance"
    return False


def fields(dict variables not None):
    """The JSON object of a log entry's fields: sorted, absent ones and the header names (level,
    time, instance) left out. None when mixer/encoding.py must write them."""
    cdef _Buffer out
    cdef list keys = []
    cdef str key
    cdef bint first = True
    for name in variables:
        if not PyUnicode_CheckExact(name):
            return None
        keys.append(name)
    keys.sort()
    _start(&out, 1024)
    try:
        _put(&out, b"{", 1)
        for key in keys:
            if _is_header(key):
                continue
            value = <object>PyDict_GetItem(variables, key)
            if value is None:
                continue
            if not first:
                _put(&out, b",", 1)
            first = False
            if _put_json_string(&out, key):
                return None
            _put(&out, b":", 1)
            if _put_value(&out, value):
                return None
        _put(&out, b"}", 1)
        return PyBytes_FromStringAndSize(out.data, out.size)
    finally:
        PyMem_Free(out.data)


def time_text(object moment):
    """mixer.encoding.format_time's text of a UTC or naive datetime, as bytes; None for any other."""
    cdef _Buffer out
    if not PyDateTime_CheckExact(moment):
        return None
    _start(&out, 40)
    try:
        if _put_time(&out, moment):
            return None
        # Without the quotes _put_time writes for a JSON value.
        return PyBytes_FromStringAndSize(out.data + 1, out.size - 2)
    finally:
        PyMem_Free(out.data)
