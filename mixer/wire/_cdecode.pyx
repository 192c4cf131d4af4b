# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled fast path of the istio.mixer.v1 decoder: wire bytes straight into attribute bags.

It reads the protobuf wire format itself instead of asking upb for a message and then walking the
message's maps from Python, which is where the pure-Python decoder spends its time. The pure-Python
decoder (mixer/wire/_decode.py) stays the definition of what a request means and of every error
message: this module handles a well-formed message, and on anything it is not sure about (any
framing upb would refuse or treat specially, an index outside the dictionaries, a repeated name, a
value out of range, a limit reached) it returns None and the caller decodes the same bytes in pure
Python, which then succeeds or raises exactly as it always did. A None costs one extra decode of a
request that is usually refused anyway.

What "sure" means, field by field, is upb's behaviour for proto3: varints of up to ten bytes
(higher bits dropped), tags and lengths of up to five bytes, int32 and sint32 fields truncated from
the 64-bit varint, UTF-8 checked for ``string`` fields only, unknown fields skipped, the last of
repeated scalar fields kept, map entries with missing keys or values taking the defaults. Groups,
known fields with an unexpected wire type, unknown fields inside map entries and nested messages,
a map key sent twice and a message value sent twice in one entry (which upb merges) are left to
upb, through the fallback.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.datetime cimport datetime_new, import_datetime, timedelta_new
from cpython.dict cimport PyDict_Copy, PyDict_GetItem, PyDict_SetItem, PyDict_Size, PyDict_Update
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject
from cpython.sequence cimport PySequence_Contains
from cpython.tuple cimport PyTuple_GET_ITEM
from cpython.unicode cimport PyUnicode_DecodeUTF8, PyUnicode_GET_LENGTH
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.string cimport memcpy

import_datetime()

# Statuses of the internal functions (besides -1, a Python exception).
cdef enum:
    DONE = 0
    UNSURE = 1

cdef enum:
    WT_VARINT = 0
    WT_FIXED64 = 1
    WT_LEN = 2
    WT_FIXED32 = 5

#: Field numbers of CompressedAttributes (istio/mixer/v1/attributes.proto).
cdef enum:
    F_WORDS = 1
    F_STRINGS = 2
    F_INT64S = 3
    F_DOUBLES = 4
    F_BOOLS = 5
    F_TIMESTAMPS = 6
    F_DURATIONS = 7
    F_BYTES = 8
    F_STRING_MAPS = 9

# datetime's range, in seconds from the epoch: 0001-01-01T00:00:00 and 9999-12-31T23:59:59.
cdef int64_t _MIN_TIMESTAMP = -62135596800
cdef int64_t _MAX_TIMESTAMP = 253402300799
# google.protobuf.Duration's documented range, +-10,000 years (as _decode.py).
cdef int64_t _MAX_DURATION_SECONDS = 315576000000
cdef int32_t _NANOS_PER_SECOND = 1000000000

# Set once by configure(): the objects the pure-Python decoder builds its values with, so that both
# paths hand out the same types (and share the IP address cache).
cdef tuple _global_words = ()
cdef Py_ssize_t _global_count = 0
cdef object _utc = None
cdef dict _ip_cache = None
cdef object _ip_address = None
cdef object _odd_duration = None
cdef object _nano_duration = None
cdef object _bag = None
cdef object _frozen_map = None
cdef object _decode_error = None


def configure(
    tuple global_words,
    object utc,
    dict ip_cache,
    object ip_address,
    object odd_duration,
    object nano_duration,
    object bag,
    object frozen_map,
    object decode_error,
):
    """Hand over the objects the decoded values are built with (see mixer/wire/_cdecode.pyi)."""
    global _global_words, _global_count, _utc, _ip_cache, _ip_address, _odd_duration
    global _nano_duration, _bag, _frozen_map, _decode_error
    _global_words = global_words
    _global_count = len(global_words)
    _utc = utc
    _ip_cache = ip_cache
    _ip_address = ip_address
    _odd_duration = odd_duration
    _nano_duration = nano_duration
    _bag = bag
    _frozen_map = frozen_map
    _decode_error = decode_error


# The wire primitives, then the reading of one CompressedAttributes into a bag.
include "_cdecode_wire.pxi"
include "_cdecode_attributes.pxi"


# --- requests -------------------------------------------------------------------------------------

def report_elements(
    bytes data not None,
    Py_ssize_t start,
    Py_ssize_t end,
    Py_ssize_t first,
    list default_words not None,
    bint default_words_fit,
    object ip_names,
    Py_ssize_t max_attributes,
    Py_ssize_t max_string_length,
    Py_ssize_t max_map_entries,
    bint delta,
    dict current not None,
):
    """The bags of the ReportRequest fields in ``data[start:end]`` and the delta state after them.

    None when the pure-Python decoder must decide (see the module's docstring).
    """
    cdef const unsigned char* buf = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t pos = start, position = first, payload_start, payload_stop
    cdef uint32_t field
    cdef int wire_type
    cdef _Limits limits
    cdef dict values
    cdef list bags = []
    if start < 0 or end > PyBytes_GET_SIZE(data) or start > end:
        raise ValueError("span outside the data")
    limits.max_attributes = max_attributes
    limits.max_string_length = max_string_length
    limits.max_map_entries = max_map_entries
    while pos < end:
        if _tag(buf, &pos, end, &field, &wire_type) != DONE:
            return None
        if field == 1 or field == 2:
            if wire_type != WT_LEN or _delimited(buf, &pos, end, &payload_start, &payload_stop) != DONE:
                return None
            if field == 2:
                # default_words between elements: already read with the header, but still a
                # ``string`` field that upb checks.
                if _utf8(buf, payload_start, payload_stop) is None:
                    return None
                continue
            values = {}
            if _attributes(
                buf, payload_start, payload_stop, default_words, default_words_fit, ip_names, &limits, values
            ) != DONE:
                return None
            if delta:
                if position:
                    merged = PyDict_Copy(current)
                    PyDict_Update(merged, values)
                    values = merged
                    if PyDict_Size(values) > max_attributes:
                        return None
                current = values
            bags.append(_bag(values))
            position += 1
        elif field == 3 or field == 4:
            if wire_type != WT_VARINT or _skip(buf, &pos, end, wire_type) != DONE:
                return None
        elif _skip(buf, &pos, end, wire_type) != DONE:
            return None
    return bags, current


def check_request(
    bytes data not None,
    object ip_names,
    Py_ssize_t max_attributes,
    Py_ssize_t max_string_length,
    Py_ssize_t max_map_entries,
):
    """``(attributes, deduplication_id, [(quota, amount, best_effort)], global_word_count)`` of a
    serialized CheckRequest, or None when the pure-Python decoder must decide."""
    cdef const unsigned char* buf = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t pos = 0, end = PyBytes_GET_SIZE(data), start, stop, value_start, value_stop, inner
    cdef Py_ssize_t attributes_start = 0, attributes_stop = 0
    cdef bint seen_attributes = False, seen_params
    cdef uint32_t field, inner_field
    cdef int wire_type
    cdef uint64_t raw, global_word_count = 0, amount, best_effort
    cdef _Limits limits
    cdef dict values = {}
    cdef dict quotas = {}
    dedup_id = ""
    limits.max_attributes = max_attributes
    limits.max_string_length = max_string_length
    limits.max_map_entries = max_map_entries
    while pos < end:
        if _tag(buf, &pos, end, &field, &wire_type) != DONE:
            return None
        if field == 2:
            if wire_type != WT_VARINT or _varint(buf, &pos, end, &raw) != DONE:
                return None
            global_word_count = <uint32_t>raw
            continue
        if field == 1 or field == 3 or field == 4:
            if wire_type != WT_LEN or _delimited(buf, &pos, end, &start, &stop) != DONE:
                return None
        elif _skip(buf, &pos, end, wire_type) != DONE:
            return None
        if field == 1:
            if seen_attributes:
                # upb merges a message field sent twice: left to it.
                return None
            seen_attributes = True
            attributes_start = start
            attributes_stop = stop
        elif field == 3:
            dedup_id = _utf8(buf, start, stop)
            if dedup_id is None:
                return None
        elif field == 4:
            # map<string, QuotaParams> entry: the key's text, then QuotaParams{amount, best_effort}.
            name = ""
            amount = 0
            best_effort = 0
            seen_params = False
            inner = start
            while inner < stop:
                if _tag(buf, &inner, stop, &inner_field, &wire_type) != DONE or wire_type != WT_LEN:
                    return None
                if _delimited(buf, &inner, stop, &value_start, &value_stop) != DONE:
                    return None
                if inner_field == 1:
                    name = _utf8(buf, value_start, value_stop)
                    if name is None:
                        return None
                elif inner_field == 2 and not seen_params:
                    seen_params = True
                    while value_start < value_stop:
                        if _tag(buf, &value_start, value_stop, &inner_field, &wire_type) != DONE:
                            return None
                        if wire_type != WT_VARINT or _varint(buf, &value_start, value_stop, &raw) != DONE:
                            return None
                        if inner_field == 1:
                            amount = raw
                        elif inner_field == 2:
                            best_effort = raw != 0
                        else:
                            return None
                else:
                    return None
            if name in quotas:
                return None
            quotas[name] = (<int64_t>amount, best_effort != 0)
    if global_word_count > <uint64_t>_global_count:
        return None
    # Without the field the attributes are empty, and the limits still apply (a negative one refuses).
    if _attributes(buf, attributes_start, attributes_stop, [], True, ip_names, &limits, values) != DONE:
        return None
    if PyUnicode_GET_LENGTH(dedup_id) > max_string_length:
        return None
    for name in quotas:
        if PyUnicode_GET_LENGTH(name) > max_string_length:
            return None
    return values, dedup_id, [(name, a, b) for name, (a, b) in quotas.items()], <Py_ssize_t>global_word_count


def scan_fields(
    bytes data not None,
    Py_ssize_t pos,
    Py_ssize_t fields,
    list spans not None,
    Py_ssize_t limit,
    bytearray header not None,
):
    """Walk at most ``fields`` top-level fields of a serialized ReportRequest from ``pos``: each
    ``attributes`` element's ``(start, end)`` is appended to ``spans``, every other field's bytes to
    ``header``; ``(pos, fields)`` where it stopped.

    It stops before anything the pure-Python scan refuses or reads in its general way (a tag or
    length over five bytes, an unsupported wire type, a truncated field, one element too many), so
    every refusal and its message are the pure-Python scan's.
    """
    cdef const unsigned char* buf = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(data), start, payload
    cdef uint64_t tag, length, ignored
    cdef int wire_type
    if pos < 0:
        raise ValueError("negative position")
    while pos < size and fields > 0:
        start = pos
        payload = pos
        if _varint(buf, &payload, size, &tag) != DONE or payload - pos > 5:
            break
        wire_type = <int>(tag & 7)
        if wire_type == WT_LEN:
            if _short_varint(buf, &payload, size, &length) != DONE or length > <uint64_t>(size - payload):
                break
            payload += <Py_ssize_t>length
        elif wire_type == WT_VARINT:
            if _varint(buf, &payload, size, &ignored) != DONE:
                break
        elif wire_type == WT_FIXED64 or wire_type == WT_FIXED32:
            length = 8 if wire_type == WT_FIXED64 else 4
            if length > <uint64_t>(size - payload):
                break
            payload += <Py_ssize_t>length
        else:
            break
        if tag == 0x0A:
            if PyList_GET_SIZE(spans) >= limit:
                break
            spans.append((start, payload))
        else:
            header.extend(buf[start:payload])
        pos = payload
        fields -= 1
    return pos, fields
