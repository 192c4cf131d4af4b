"""Bulk answers are decoded with orjson, to the same values as the client's json decoder."""

from __future__ import annotations

import json

from elasticsearch.serializer import CompatibilityModeJsonSerializer, JsonSerializer

from adapters.elasticsearch._sender import _ANSWER_SERIALIZERS


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
        ours = _ANSWER_SERIALIZERS[mimetype]
        assert type(ours).__name__.startswith("_Orjson")
        assert ours.loads(answer) == reference.loads(answer)
        assert ours.loads(b"") is None
        # Requests are written as the client writes them.
        assert ours.dumps({"a": [1, "x"]}) == reference.dumps({"a": [1, "x"]})
