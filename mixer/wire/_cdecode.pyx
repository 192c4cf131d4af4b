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


# --- one CompressedAttributes ---------------------------------------------------------------------

cdef struct _Span:
    int field
    Py_ssize_t start
    Py_ssize_t stop


cdef struct _Limits:
    Py_ssize_t max_attributes
    Py_ssize_t max_string_length
    Py_ssize_t max_map_entries


cdef inline PyObject* _word(int32_t index, list words) noexcept:
    """The word at ``index`` (global when >= 0, the message's when < 0), or NULL when there is none."""
    if index >= 0:
        if index < _global_count:
            return PyTuple_GET_ITEM(_global_words, index)
        return NULL
    # In 64 bits: -index overflows int32 for index == INT32_MIN.
    cdef int64_t position = -(<int64_t>index)
    if position <= PyList_GET_SIZE(words):
        return PyList_GET_ITEM(words, <Py_ssize_t>(position - 1))
    return NULL


cdef int _entry(
    const unsigned char* buf,
    Py_ssize_t pos,
    Py_ssize_t end,
    int value_wire_type,
    int32_t* key,
    uint64_t* scalar,
    Py_ssize_t* value_start,
    Py_ssize_t* value_stop,
) noexcept:
    """A map entry's key and value (a scalar, or the span of a length-delimited value)."""
    cdef uint32_t field
    cdef int wire_type
    cdef uint64_t raw
    cdef bint seen_value = False
    key[0] = 0
    scalar[0] = 0
    value_start[0] = pos
    value_stop[0] = pos
    while pos < end:
        if _tag(buf, &pos, end, &field, &wire_type) != DONE:
            return UNSURE
        if field == 1 and wire_type == WT_VARINT:
            if _varint(buf, &pos, end, &raw) != DONE:
                return UNSURE
            key[0] = _zigzag32(raw)
        elif field == 2 and wire_type == value_wire_type:
            if wire_type == WT_VARINT:
                if _varint(buf, &pos, end, scalar) != DONE:
                    return UNSURE
            elif wire_type == WT_FIXED64:
                if end - pos < 8:
                    return UNSURE
                memcpy(scalar, buf + pos, 8)
                pos += 8
            else:
                if seen_value:
                    # A second message value is merged into the first by upb: left to it.
                    return UNSURE
                seen_value = True
                if _delimited(buf, &pos, end, value_start, value_stop) != DONE:
                    return UNSURE
        else:
            return UNSURE
    return DONE


cdef int _seconds_nanos(
    const unsigned char* buf, Py_ssize_t pos, Py_ssize_t end, int64_t* seconds, int32_t* nanos
) noexcept:
    """A google.protobuf.Timestamp or Duration: both are ``int64 seconds = 1; int32 nanos = 2``."""
    cdef uint32_t field
    cdef int wire_type
    cdef uint64_t raw
    seconds[0] = 0
    nanos[0] = 0
    while pos < end:
        if _tag(buf, &pos, end, &field, &wire_type) != DONE or wire_type != WT_VARINT:
            return UNSURE
        if _varint(buf, &pos, end, &raw) != DONE:
            return UNSURE
        if field == 1:
            seconds[0] = <int64_t>raw
        elif field == 2:
            nanos[0] = <int32_t>(<uint32_t>raw)
        else:
            return UNSURE
    return DONE


cdef inline int64_t _floor_div(int64_t a, int64_t b) noexcept:
    cdef int64_t q = a // b
    if (a % b != 0) and ((a < 0) != (b < 0)):
        q -= 1
    return q


cdef object _timestamp(int64_t seconds, int32_t nanos):
    """The UTC datetime (microseconds), or None outside datetime's range or with bad nanos."""
    cdef int64_t days, rest, z, era, doe, yoe, year, doy, mp, day, month
    if nanos < 0 or nanos >= _NANOS_PER_SECOND or seconds < _MIN_TIMESTAMP or seconds > _MAX_TIMESTAMP:
        return None
    days = _floor_div(seconds, 86400)
    rest = seconds - days * 86400
    # Civil date from days since 1970-01-01 (Howard Hinnant's algorithm, proleptic Gregorian).
    z = days + 719468
    era = _floor_div(z, 146097)
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    year = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    if month <= 2:
        year += 1
    return datetime_new(
        <int>year, <int>month, <int>day, <int>(rest // 3600), <int>((rest // 60) % 60), <int>(rest % 60),
        <int>(nanos // 1000), _utc,
    )


cdef object _duration(object name, int64_t seconds, int32_t nanos):
    """The timedelta (NanoDuration below the microsecond), or None when the decoder refuses it."""
    if 0 <= seconds <= _MAX_DURATION_SECONDS and 0 <= nanos < _NANOS_PER_SECOND:
        if nanos % 1000:
            return _nano_duration(seconds, nanos)
        return timedelta_new(<int>(seconds // 86400), <int>(seconds % 86400), <int>(nanos // 1000))
    try:
        # Negative, or malformed: the pure-Python rules decide.
        return _odd_duration(name, seconds, nanos)
    except _decode_error:
        return None


cdef object _string_map(const unsigned char* buf, Py_ssize_t pos, Py_ssize_t end, list words, _Limits* limits):
    """A StringMap's entries as a FrozenStringMap, or None."""
    cdef uint32_t field
    cdef int wire_type
    cdef Py_ssize_t start, stop, ignored_start, ignored_stop, count = 0
    cdef int32_t key
    cdef uint64_t value
    cdef PyObject* key_word
    cdef PyObject* value_word
    if limits.max_map_entries < 0:
        return None
    result = _frozen_map()
    while pos < end:
        if _tag(buf, &pos, end, &field, &wire_type) != DONE or field != 1 or wire_type != WT_LEN:
            return None
        if _delimited(buf, &pos, end, &start, &stop) != DONE:
            return None
        if _entry(buf, start, stop, WT_VARINT, &key, &value, &ignored_start, &ignored_stop) != DONE:
            return None
        count += 1
        if count > limits.max_map_entries:
            return None
        key_word = _word(key, words)
        value_word = _word(_zigzag32(value), words)
        if key_word is NULL or value_word is NULL:
            return None
        # PyDict_SetItem, not the subclass's refusing __setitem__: the map is not handed out yet.
        PyDict_SetItem(result, <object>key_word, <object>value_word)
    if PyDict_Size(result) != count:
        # A key sent twice (upb keeps the last): left to the pure-Python path.
        return None
    return result


cdef int _value(
    const unsigned char* buf,
    _Span* span,
    list words,
    object ip_names,
    _Limits* limits,
    dict out,
) except -1:
    """Decode one attribute's map entry into ``out``."""
    cdef int32_t key
    cdef uint64_t scalar
    cdef Py_ssize_t start, stop
    cdef int64_t seconds
    cdef int32_t nanos
    cdef int field = span.field
    cdef int wire_type = WT_VARINT
    cdef double number
    cdef PyObject* name_word
    cdef PyObject* value_word
    cdef PyObject* cached
    if field == F_DOUBLES:
        wire_type = WT_FIXED64
    elif field >= F_TIMESTAMPS:
        wire_type = WT_LEN
    if _entry(buf, span.start, span.stop, wire_type, &key, &scalar, &start, &stop) != DONE:
        return UNSURE
    name_word = _word(key, words)
    if name_word is NULL:
        return UNSURE
    name = <object>name_word
    if field == F_STRINGS:
        value_word = _word(_zigzag32(scalar), words)
        if value_word is NULL:
            return UNSURE
        value = <object>value_word
    elif field == F_INT64S:
        value = <int64_t>scalar
    elif field == F_DOUBLES:
        memcpy(&number, &scalar, 8)
        value = number
    elif field == F_BOOLS:
        value = scalar != 0
    elif field == F_TIMESTAMPS or field == F_DURATIONS:
        if _seconds_nanos(buf, start, stop, &seconds, &nanos) != DONE:
            return UNSURE
        value = _timestamp(seconds, nanos) if field == F_TIMESTAMPS else _duration(name, seconds, nanos)
        if value is None:
            return UNSURE
    elif field == F_BYTES:
        value = PyBytes_FromStringAndSize(<const char*>buf + start, stop - start)
        if PySequence_Contains(ip_names, name):
            cached = PyDict_GetItem(_ip_cache, value)
            if cached is not NULL:
                value = <object>cached
            else:
                try:
                    value = _ip_address(name, value)
                except _decode_error:
                    return UNSURE
        elif stop - start > limits.max_string_length:
            return UNSURE
    else:
        value = _string_map(buf, start, stop, words, limits)
        if value is None:
            return UNSURE
    PyDict_SetItem(out, name, value)
    return DONE


# Spans held on the stack before one element needs the heap (Istio 1.4 sends 30 to 60 attributes).
cdef enum:
    _STACK_SPANS = 96


cdef int _words_fit(list words, Py_ssize_t max_string_length) except -1:
    cdef Py_ssize_t i
    for i in range(PyList_GET_SIZE(words)):
        if PyUnicode_GET_LENGTH(<object>PyList_GET_ITEM(words, i)) > max_string_length:
            return 0
    return 1


cdef int _attributes(
    const unsigned char* buf,
    Py_ssize_t pos,
    Py_ssize_t end,
    list default_words,
    bint default_words_fit,
    object ip_names,
    _Limits* limits,
    dict out,
) except -1:
    """One CompressedAttributes into ``out``: DONE, or UNSURE (``out`` then holds a part)."""
    cdef _Span stack_spans[_STACK_SPANS]
    cdef _Span* spans = stack_spans
    cdef _Span* grown
    cdef Py_ssize_t capacity = _STACK_SPANS, count = 0, i
    cdef uint32_t field
    cdef int wire_type, status = UNSURE, previous = 0, kind
    cdef bint in_order = True
    cdef Py_ssize_t start, stop
    cdef list words = []
    if limits.max_attributes < 0:
        return UNSURE
    try:
        # First pass: the words (needed before any index resolves) and where each attribute is.
        while pos < end:
            if _tag(buf, &pos, end, &field, &wire_type) != DONE:
                return UNSURE
            if field > F_STRING_MAPS:
                if _skip(buf, &pos, end, wire_type) != DONE:
                    return UNSURE
                continue
            if wire_type != WT_LEN or _delimited(buf, &pos, end, &start, &stop) != DONE:
                return UNSURE
            if field == F_WORDS:
                word = _utf8(buf, start, stop)
                if word is None:
                    return UNSURE
                words.append(word)
                continue
            if count >= limits.max_attributes:
                return UNSURE
            if count == capacity:
                capacity *= 2
                grown = <_Span*>PyMem_Malloc(capacity * sizeof(_Span))
                if grown is NULL:
                    raise MemoryError()
                memcpy(grown, spans, count * sizeof(_Span))
                if spans is not stack_spans:
                    PyMem_Free(spans)
                spans = grown
            spans[count].field = <int>field
            spans[count].start = start
            spans[count].stop = stop
            count += 1
            if <int>field < previous:
                in_order = False
            previous = <int>field
        if words:
            if not _words_fit(words, limits.max_string_length):
                return UNSURE
        elif not default_words_fit:
            return UNSURE
        else:
            words = default_words
        # Second pass, in the pure-Python decoder's order: strings, int64s, ... string maps.
        if in_order:
            for i in range(count):
                if _value(buf, &spans[i], words, ip_names, limits, out) != DONE:
                    return UNSURE
        else:
            for kind in range(F_STRINGS, F_STRING_MAPS + 1):
                for i in range(count):
                    if spans[i].field == kind and _value(buf, &spans[i], words, ip_names, limits, out) != DONE:
                        return UNSURE
        if PyDict_Size(out) != count:
            # A name twice, in one map or two: left to the pure-Python path.
            return UNSURE
        status = DONE
    finally:
        if spans is not stack_spans:
            PyMem_Free(spans)
    return status


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
