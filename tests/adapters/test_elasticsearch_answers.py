"""Bulk answers are decoded with orjson, to the same values as the client's json decoder; bulk
bodies we joined go out as they are, anything else as the client writes it."""

from __future__ import annotations

import json

from elasticsearch.serializer import (
    CompatibilityModeJsonSerializer,
    CompatibilityModeNdjsonSerializer,
    JsonSerializer,
    NdjsonSerializer,
)

from adapters.elasticsearch._sender import _SERIALIZERS


def test_answers_decode_as_with_json() -> None:
    items = [{"index": {"status": 201}}] * 50 + [
        {
            "index": {
                "status": 429,
                "error": {"type": "es_rejected_execution_exception", "reason": "ü \u2028"},
            }
        },
        {"create": {"status": 400, "error": {"type": "mapper_parsing_exception", "reason": 'a "b"'}}},
    ]
    answer = json.dumps({"errors": True, "items": items}).encode()
    for mimetype, reference in (
        ("application/json", JsonSerializer()),
        ("application/vnd.elasticsearch+json", CompatibilityModeJsonSerializer()),
    ):
        ours = _SERIALIZERS[mimetype]
        assert type(ours).__name__.startswith("_Orjson")
        assert ours.loads(answer) == reference.loads(answer)
        assert ours.loads(b"") is None
        # Requests are written as the client writes them.
        assert ours.dumps({"a": [1, "x"]}) == reference.dumps({"a": [1, "x"]})


def test_joined_bulk_bodies_are_sent_as_they_are() -> None:
    body = b'{"index":{"_index":"a"}}\n{"x":1}\n{"index":{"_index":"a"}}\n{"x":"\xc3\xbc"}\n'
    for reference in (NdjsonSerializer(), CompatibilityModeNdjsonSerializer()):
        ours = _SERIALIZERS[reference.mimetype]
        assert ours.mimetype == reference.mimetype
        assert ours.dumps(body) is body
        assert ours.dumps(body) == reference.dumps(body)
        # What we do not join ourselves is written by the client's own rules.
        for other in (body[:-1], [{"index": {}}, {"x": 1}], [b'{"a":1}', '{"b":2}'], "x\n", bytearray(body)):
            assert ours.dumps(other) == reference.dumps(other)
