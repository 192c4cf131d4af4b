# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled fast path of the OTLP span encoder: one tracespan instance straight into the bytes
of an OTLP ``Span``.

The pure-Python path (mixer/spans/__init__.py reads the instance into a SpanData, then
mixer/spans/otlp.py writes it) stays the definition of what an instance means, of every refusal and
of every byte written. This module handles the common instance: B3 ids in hex, UTC times after the
epoch, no W3C trace context in the tags. On anything else (a traceparent or tracestate tag, a
malformed id, a missing or reversed time, a name that is not valid UTF-8, a subclass of a scalar
type) it returns None and the caller encodes the same instance in pure Python, which then succeeds
or raises exactly as it always did. Attribute values other than exact str, int, float and bool are
written by the pure-Python attribute encoder handed over by configure().

Field numbers (opentelemetry/proto/trace/v1/trace.proto): trace_id 1, span_id 2, parent_span_id 4,
name 5, kind 6, start 7, end 8 (fixed64), attributes 9, status 15, flags 16 (fixed32); KeyValue:
key 1, value 2; AnyValue: string 1, bool 2, int 3, double 4; Status: message 2, code 3.
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
from cpython.dict cimport PyDict_CheckExact, PyDict_GetItem, PyDict_Next, PyDict_SetItem
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_CheckExact
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

import_datetime()

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object text, Py_ssize_t* size) except NULL
    Py_ssize_t PyUnicode_GET_LENGTH(object text)
    Py_UCS4 PyUnicode_READ_CHAR(object text, Py_ssize_t index)
    bint Py_UNICODE_ISSPACE(Py_UCS4 ch)
    # Exact str objects only (a subclass may be not ready): every caller checks first.
    bint PyUnicode_IS_ASCII(object text)
    bint PyLong_CheckExact(object value)
    bint PyFloat_CheckExact(object value)
    long long PyLong_AsLongLongAndOverflow(object value, int* overflow) except? -1
    double PyFloat_AS_DOUBLE(object value)

# Mixer's XOR pad for rewrite_client_span_id (mixer/spans/__init__.py has the reason).
cdef uint8_t _REWRITE_PAD[8]
_REWRITE_PAD[:] = [0x3F, 0x6A, 0x2E, 0xC3, 0xC8, 0x10, 0xC2, 0xAB]
cdef uint64_t _UINT64_MAX = 0xFFFFFFFFFFFFFFFF
# The epoch's day number in days_from_civil's count (0000-03-01 based).
cdef int64_t _EPOCH_DAYS = 719468

# Set once by configure(): the pure-Python pieces both paths share.
cdef object _utc = None
cdef object _ip_text = None
cdef object _attribute_field = None
cdef dict _legacy_names = None


def configure(object utc, object ip_text, object attribute_field, dict legacy_names not None):
    """Hand over UTC, the IP address formatter, the pure-Python attribute encoder and the legacy tag
    names (see mixer/spans/_cspan.pyi)."""
    global _utc, _ip_text, _attribute_field, _legacy_names
    _utc = utc
    _ip_text = ip_text
    _attribute_field = attribute_field
    _legacy_names = legacy_names


# The output buffer and the protobuf primitives (shared with mixer/_cline.pyx).
include "../_cbuffer.pxi"


# --- pieces of an instance -----------------------------------------------------------------------

cdef object _stripped(object value):
    """mixer.spans._text: a str stripped, anything else empty; None for a str subclass."""
    cdef Py_ssize_t length
    if value is None:
        return ""
    if not PyUnicode_CheckExact(value):
        return None if isinstance(value, str) else ""
    length = PyUnicode_GET_LENGTH(value)
    if length == 0:
        return value
    if Py_UNICODE_ISSPACE(PyUnicode_READ_CHAR(value, 0)) or Py_UNICODE_ISSPACE(
        PyUnicode_READ_CHAR(value, length - 1)
    ):
        return value.strip()
    return value


cdef int _hex_digit(char c) nogil:
    if 48 <= c <= 57:  # 0-9
        return c - 48
    if 97 <= c <= 102:  # a-f
        return c - 87
    if 65 <= c <= 70:  # A-F
        return c - 55
    return -1


cdef int _parse_id(str text, uint8_t* out, Py_ssize_t* width) except -1:
    """A B3 id of 16 or 32 hex characters, not all zeros, into ``out``; 1 when it is not one."""
    cdef Py_ssize_t size, i
    cdef const char* chars
    cdef int high, low
    cdef uint8_t seen = 0
    if not PyUnicode_IS_ASCII(text):
        return 1
    chars = PyUnicode_AsUTF8AndSize(text, &size)
    if size != 16 and size != 32:
        return 1
    for i in range(size // 2):
        high = _hex_digit(chars[2 * i])
        low = _hex_digit(chars[2 * i + 1])
        if high < 0 or low < 0:
            return 1
        out[i] = <uint8_t>(high << 4 | low)
        seen |= out[i]
    if seen == 0:
        return 1
    width[0] = size // 2
    return 0


cdef int64_t _days_from_civil(int64_t year, int64_t month, int64_t day) nogil:
    # Howard Hinnant's days_from_civil: days since 1970-01-01 in the proleptic Gregorian calendar.
    cdef int64_t era, yoe, doy, doe
    if month <= 2:
        year -= 1
    era = (year if year >= 0 else year - 399) // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - _EPOCH_DAYS


cdef int _unix_nanos(object moment, uint64_t* nanos) except -1:
    """A UTC or naive datetime at or after the epoch, as fixed64 nanoseconds; 1 for anything else."""
    cdef int64_t days, micros
    if not PyDateTime_CheckExact(moment):
        return 1
    zone = datetime_tzinfo(moment)
    if zone is not None and zone is not _utc:
        return 1
    days = _days_from_civil(
        PyDateTime_GET_YEAR(moment), PyDateTime_GET_MONTH(moment), PyDateTime_GET_DAY(moment)
    )
    micros = (
        ((days * 24 + PyDateTime_DATE_GET_HOUR(moment)) * 60 + PyDateTime_DATE_GET_MINUTE(moment)) * 60
        + PyDateTime_DATE_GET_SECOND(moment)
    ) * 1000000 + PyDateTime_DATE_GET_MICROSECOND(moment)
    if micros < 0 or <uint64_t>micros > _UINT64_MAX // 1000:
        return 1
    nanos[0] = <uint64_t>micros * 1000
    return 0


# What a piece returns when the pure-Python path must decide.
cdef object _UNSURE = object()


cdef object _size(object value):
    """mixer.spans._size: a non-negative int, else None; _UNSURE for an int subclass."""
    if value is None:
        return None
    if PyLong_CheckExact(value):
        return value if value >= 0 else None
    if isinstance(value, int) and value is not True and value is not False:
        return _UNSURE
    return None


cdef object _address_text(object value):
    # mixer.spans._address, then mixer.spans.otlp._ip: 0.0.0.0 and :: mean no address.
    if value is None or value.is_unspecified:
        return None
    return _ip_text(value)


cdef int _put_attribute(_Buffer* out, object key, object value) except -1:
    """Span field 9 for one attribute: mixer.spans.otlp._attribute_field's bytes."""
    cdef Py_ssize_t key_size, value_size = 0, any_size, pair_size
    cdef const char* key_chars
    cdef const char* value_chars = NULL
    cdef long long number = 0
    cdef int overflow = 0, kind
    cdef double real
    cdef uint64_t bits
    cdef bytes encoded
    if not PyUnicode_CheckExact(key):
        kind = -1
    elif PyUnicode_CheckExact(value):
        kind = 1
    elif value is True or value is False:
        kind = 2
    elif PyLong_CheckExact(value):
        number = PyLong_AsLongLongAndOverflow(value, &overflow)
        kind = 3 if overflow == 0 else -1
    elif PyFloat_CheckExact(value):
        kind = 4
    else:
        kind = -1
    if kind == 1 and not PyUnicode_IS_ASCII(value):
        # Lone surrogates are replaced by the Python encoder; leave every non-ASCII text to it.
        kind = -1
    if kind < 0 or not PyUnicode_IS_ASCII(key):
        encoded = _attribute_field(key, value)
        _put(out, PyBytes_AS_STRING(encoded), PyBytes_GET_SIZE(encoded))
        return 0
    key_chars = PyUnicode_AsUTF8AndSize(key, &key_size)
    if kind == 1:
        value_chars = PyUnicode_AsUTF8AndSize(value, &value_size)
        any_size = 1 + _varint_size(<uint64_t>value_size) + value_size
    elif kind == 2:
        any_size = 2
    elif kind == 3:
        any_size = 1 + _varint_size(<uint64_t>number)
    else:
        any_size = 9
    # KeyValue: the key (left out when empty, as proto3 does), then the AnyValue.
    pair_size = 1 + _varint_size(<uint64_t>any_size) + any_size
    if key_size:
        pair_size += 1 + _varint_size(<uint64_t>key_size) + key_size
    _reserve(out, 1)
    out.data[out.size] = <char>0x4A
    out.size += 1
    _put_varint(out, <uint64_t>pair_size)
    if key_size:
        _put_field(out, 0x0A, key_chars, key_size)
    _reserve(out, 1)
    out.data[out.size] = <char>0x12
    out.size += 1
    _put_varint(out, <uint64_t>any_size)
    if kind == 1:
        _put_field(out, 0x0A, value_chars, value_size)
    elif kind == 2:
        _put(out, b"\x10\x01" if value is True else b"\x10\x00", 2)
    elif kind == 3:
        _reserve(out, 1)
        out.data[out.size] = <char>0x18
        out.size += 1
        _put_varint(out, <uint64_t>number)
    else:
        real = PyFloat_AS_DOUBLE(value)
        memcpy(&bits, &real, 8)
        _reserve(out, 1)
        out.data[out.size] = <char>0x21
        out.size += 1
        _put_fixed(out, bits, 8)
    return 0


include "_cspan_instance.pxi"
