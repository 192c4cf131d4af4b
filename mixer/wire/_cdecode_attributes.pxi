# Included by _cdecode.pyx (Cython's textual include): its cimports, enums and globals are in scope.

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
