# The reading of one tracespan instance (mixer.spans.span_from_instance) and the writing of its span
# (mixer.spans.otlp.encode_span), in one pass. Included by _cspan.pyx.

cdef object _tag_name(object key, object value):
    if key == "http.url":
        # Istio's example config puts the path in http.url; a full URL has a scheme.
        return "url.full" if isinstance(value, str) and "://" in value else "url.path"
    return _legacy_names.get(key, key)


cdef object _tag_value(object name, object value):
    if name == "http.response.status_code" and isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return value


cdef object _attributes(
    object status, tuple sizes, object peer_text, object local_text, object peer_service,
    bint client, object protocol, dict tags,
):
    """mixer.spans.otlp.span_attributes: the derived attributes in their order, then the tags.

    None when a tag needs the pure-Python path (a key that is not a str, a str subclass value).
    """
    cdef dict attributes = {}
    if status is not None:
        attributes["http.response.status_code"] = status
    if sizes[0] is not None:
        attributes["http.request.body.size"] = sizes[0]
    if sizes[1] is not None:
        attributes["http.request.size"] = sizes[1]
    if sizes[2] is not None:
        attributes["http.response.body.size"] = sizes[2]
    if sizes[3] is not None:
        attributes["http.response.size"] = sizes[3]
    if peer_text is not None:
        attributes["network.peer.address"] = peer_text
    if local_text is not None:
        attributes["network.local.address"] = local_text
    if peer_service:
        attributes["peer.service"] = peer_service
    if not client and peer_text is not None:
        attributes["client.address"] = peer_text
    if protocol == "grpc":
        attributes["rpc.system"] = "grpc"
    elif protocol:
        attributes["network.protocol.name"] = protocol
    for key, value in tags.items():
        if not PyUnicode_CheckExact(key):
            return None
        if key == "traceparent" or key == "tracestate" or value is None:
            continue
        if PyUnicode_CheckExact(value):
            if PyUnicode_GET_LENGTH(value) == 0:
                continue
        elif isinstance(value, str):
            return None
        name = _tag_name(key, value)
        attributes[name] = _tag_value(name, value)
    return attributes


cdef bint _context_tag_set(dict tags, str name):
    # A non-empty traceparent or tracestate tag: the W3C path, left to Python.
    cdef PyObject* found = PyDict_GetItem(tags, name)
    if found == NULL:
        return False
    text = _stripped(<object>found)
    return text is None or bool(text)


cdef int _put_span(
    _Buffer* out, const uint8_t* trace, Py_ssize_t trace_width, const uint8_t* span,
    const uint8_t* parent, bint has_parent, object name, bint client, uint64_t start_ns,
    uint64_t end_ns, dict attributes, object status,
) except -1:
    cdef uint8_t padded[16]
    cdef Py_ssize_t size
    cdef const char* chars
    cdef bytes encoded
    cdef uint32_t flags = 0x01
    # trace_id, always 16 bytes: a 64-bit id is left-padded with zeros.
    for i in range(16):
        padded[i] = 0
    memcpy(padded + 16 - trace_width, trace, trace_width)
    _put_field(out, 0x0A, <const char*>padded, 16)
    _put_field(out, 0x12, <const char*>span, 8)
    if has_parent:
        _put_field(out, 0x22, <const char*>parent, 8)
    if PyUnicode_CheckExact(name) and PyUnicode_IS_ASCII(name):
        chars = PyUnicode_AsUTF8AndSize(name, &size)
        _put_field(out, 0x2A, chars, size)
    else:
        encoded = name.encode("utf-8", "replace")
        _put_field(out, 0x2A, PyBytes_AS_STRING(encoded), PyBytes_GET_SIZE(encoded))
    # kind: SPAN_KIND_SERVER 2, SPAN_KIND_CLIENT 3.
    _put(out, b"\x30\x03" if client else b"\x30\x02", 2)
    if start_ns:
        _put(out, b"\x39", 1)
        _put_fixed(out, start_ns, 8)
    if end_ns:
        _put(out, b"\x41", 1)
        _put_fixed(out, end_ns, 8)
    for key, value in attributes.items():
        _put_attribute(out, key, value)
    if status is not None and (status >= 500 or (client and status >= 400)):
        encoded = f"HTTP status {status}".encode()
        # Status: message (2), then code (3) = STATUS_CODE_ERROR (2).
        _put(out, b"\x7A", 1)
        _put_varint(out, <uint64_t>(1 + _varint_size(PyBytes_GET_SIZE(encoded)) + PyBytes_GET_SIZE(encoded) + 2))
        _put_field(out, 0x12, PyBytes_AS_STRING(encoded), PyBytes_GET_SIZE(encoded))
        _put(out, b"\x18\x02", 2)
    if has_parent:
        # A proxy never created its span's parent: the parent is remote, and that is known.
        flags |= 0x300
    _put(out, b"\x85\x01", 2)
    _put_fixed(out, flags, 4)
    return 0


def encode(object instance):
    """The serialized OTLP ``Span`` of a tracespan instance and its local service name.

    None when the pure-Python path must decide (see the module's docstring).
    """
    cdef uint8_t trace[16]
    cdef uint8_t span[8]
    cdef uint8_t parent[8]
    cdef Py_ssize_t trace_width = 0, width = 0
    cdef bint has_parent = False, client, rewrite
    cdef uint64_t start_ns = 0, end_ns = 0
    cdef _Buffer out
    cdef int i
    tags = instance.span_tags
    if tags is None:
        tags = {}
    elif not PyDict_CheckExact(tags):
        return None
    if _context_tag_set(tags, "traceparent") or _context_tag_set(tags, "tracestate"):
        return None
    trace_text = _stripped(instance.trace_id)
    if not trace_text or "-" in trace_text or _parse_id(trace_text, trace, &trace_width):
        return None
    span_text = _stripped(instance.span_id)
    if not span_text or _parse_id(span_text, span, &width) or width != 8:
        return None
    parent_text = _stripped(instance.parent_span_id)
    if parent_text is None:
        return None
    if parent_text:
        if _parse_id(parent_text, parent, &width) or width != 8:
            return None
        has_parent = True
    start = instance.start_time
    if start is None or _unix_nanos(start, &start_ns):
        return None
    end = instance.end_time
    if end is None:
        end_ns = start_ns
    elif _unix_nanos(end, &end_ns) or end_ns < start_ns:
        return None

    client = bool(instance.client_span)
    rewrite = bool(instance.rewrite_client_span_id)
    if rewrite and client:
        for i in range(8):
            span[i] ^= _REWRITE_PAD[i]
    elif rewrite:
        for i in range(8):
            parent[i] = span[i] ^ _REWRITE_PAD[i]
        has_parent = True

    source = _stripped(instance.source_name)
    destination = _stripped(instance.destination_name)
    name = _stripped(instance.span_name)
    protocol = _stripped(instance.api_protocol)
    if source is None or destination is None or name is None or protocol is None:
        return None
    status = instance.http_status_code
    if status is None or status is True or status is False:
        status = None
    elif PyLong_CheckExact(status):
        if status <= 0:
            status = None
    elif isinstance(status, int):
        return None
    else:
        status = None
    sizes = (
        _size(instance.request_size),
        _size(instance.request_total_size),
        _size(instance.response_size),
        _size(instance.response_total_size),
    )
    for size in sizes:
        if size is _UNSURE:
            return None
    local_text = _address_text(instance.source_ip if client else instance.destination_ip)
    peer_text = _address_text(instance.destination_ip if client else instance.source_ip)
    attributes = _attributes(
        status, sizes, peer_text, local_text, destination if client else source, client,
        protocol.lower(), tags,
    )
    if attributes is None:
        return None

    _start(&out, 512)
    try:
        _put_span(
            &out, trace, trace_width, span, parent, has_parent, name or "unknown", client,
            start_ns, end_ns, attributes, status,
        )
        return PyBytes_FromStringAndSize(out.data, out.size), source if client else destination
    finally:
        PyMem_Free(out.data)
