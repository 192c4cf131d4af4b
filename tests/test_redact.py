"""mixer.redact: secrets out of logs, /config, status messages and written records."""

from __future__ import annotations

import io
import logging
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from adapters.elasticsearch import ElasticsearchConfig
from adapters.elasticsearch._encoding import DocumentEncoder
from adapters.kafka._config import Encoding
from adapters.kafka._encoding import make_encoder
from adapters.stdio import StdioConfig
from adapters.stdio._handler import LineEncoder
from mixer.redact import FieldRedaction, RedactingFilter, RedactMode, redact_text, redact_url, redact_value
from mixer.server._logging import configure_logging
from mixer.templates import LogEntryInstance

WHEN = datetime(2026, 12, 7, 4, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        ("fetch http://lister:pw-1@10.0.0.1/list failed", "pw-1", "http://lister:***@10.0.0.1/list"),
        ("redis://:pw-2@redis:6379/0", "pw-2", "redis://:***@redis:6379/0"),
        ("https://tok-3@example.com/x", "tok-3", "https://***@example.com/x"),
        ("Authorization: Bearer tok-4", "tok-4", "Authorization: Bearer ***"),
        (
            "{'proxy-authorization': 'Basic dXNlcjpwdy01'}",
            "dXNlcjpwdy01",
            "'proxy-authorization': 'Basic ***'",
        ),
        ('{"x-api-key": "key-6", "path": "/"}', "key-6", '"x-api-key": "***"'),
        ("GET /items?api_key=key-7&id=3", "key-7", "api_key=***&id=3"),
        ("password=pw-8 user=bob", "pw-8", "password=*** user=bob"),
        ("client_secret: sec-9", "sec-9", "client_secret: ***"),
    ],
)
def test_redact_text_hides_credentials_and_keeps_the_rest(text: str, secret: str, kept: str) -> None:
    redacted = redact_text(text)
    assert secret not in redacted
    assert kept in redacted


def test_text_without_secrets_is_unchanged() -> None:
    text = "GET /reviews/0 from 10.0.0.7 took 7ms (user agent curl/8, http://example.com/a@b is a path)"
    assert redact_text("GET /reviews/0 took 7ms") == "GET /reviews/0 took 7ms"
    assert redact_url("http://example.com/list") == "http://example.com/list"
    assert "example.com" in redact_text(text)


def test_redact_value_hides_secret_keys_and_urls_in_nested_data() -> None:
    data = {"params": {"provider_url": "http://u:pw@h/l", "password": "pw2", "token": "", "n": 3}}
    assert redact_value(data) == {
        "params": {"provider_url": "http://u:***@h/l", "password": "***", "token": "", "n": 3}
    }


def test_the_server_log_redacts_every_record_text_and_json() -> None:
    for log_format in ("text", "json"):
        stream = io.StringIO()
        configure_logging("INFO", log_format, stream=stream)
        try:
            log = logging.getLogger("test.redact")
            log.warning("could not fetch %s", "http://lister:pw-10@10.0.0.1/list")
            try:
                raise OSError("Authorization: Bearer tok-11 refused")
            except OSError:
                log.exception("request failed")
        finally:
            root = logging.getLogger()
            for handler in list(root.handlers):
                root.removeHandler(handler)
        out = stream.getvalue()
        assert "pw-10" not in out, log_format
        assert "tok-11" not in out, log_format
        assert "lister:***@10.0.0.1" in out
        assert "Bearer ***" in out


def test_the_filter_leaves_clean_records_alone() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "served %d requests", (3,), None)
    assert RedactingFilter().filter(record)
    assert record.getMessage() == "served 3 requests"


def entry(key: str) -> LogEntryInstance:
    return LogEntryInstance("accesslog.istio-system", variables={"apiKey": key, "url": "/a"}, timestamp=WHEN)


def test_field_redaction_modes() -> None:
    values = {"apiKey": "k-1", "url": "/a", "empty": ""}
    hashed = FieldRedaction(fields=("apiKey", "empty")).apply(values)
    assert hashed["apiKey"].startswith("sha256:")
    assert len(hashed["apiKey"]) == len("sha256:") + 16
    assert hashed["empty"] == ""
    assert hashed["url"] == "/a"
    # Stable, so records can be grouped; the salt changes it.
    assert FieldRedaction(fields=("apiKey",)).apply(values) == hashed | {"empty": ""}
    salted = FieldRedaction.model_validate({"fields": ["apiKey"], "salt": "pepper"}).apply(values)
    assert salted["apiKey"] != hashed["apiKey"]
    assert FieldRedaction(fields=("apiKey",), mode=RedactMode.MASK).apply(values)["apiKey"] == "***"
    assert "apiKey" not in FieldRedaction(fields=("apiKey",), mode=RedactMode.DROP).apply(values)
    with pytest.raises(ValidationError):
        FieldRedaction.model_validate({"fields": [], "mode": "hash"})


def test_stdio_kafka_and_elasticsearch_write_no_redacted_field_in_clear() -> None:
    params = {"fields": ["apiKey"], "mode": "hash", "salt": "s"}
    redact = FieldRedaction.model_validate(params)
    stdio = LineEncoder(StdioConfig.model_validate({"redact": params}), lambda: WHEN).encode(
        entry("secret-key")
    )
    plain = LineEncoder(StdioConfig(), lambda: WHEN).encode(entry("secret-key"))
    kafka_json = make_encoder(Encoding.JSON, lambda: WHEN, redact).encode(entry("secret-key"))
    kafka_otlp = make_encoder(Encoding.OTLP_PROTO, lambda: WHEN, redact).encode(entry("secret-key"))
    documents = DocumentEncoder(ElasticsearchConfig.model_validate({"redact": params}), lambda: WHEN)
    record = documents.encode(entry("secret-key"))
    assert record is not None
    assert plain is not None
    assert "secret-key" in plain  # the shared line cache keeps the two settings apart
    assert stdio is not None
    assert "secret-key" not in stdio
    digest = redact.digest("secret-key")
    assert digest in stdio
    for written in (kafka_json, kafka_otlp, bytes(record.payload)):
        assert b"secret-key" not in written
        assert digest.encode() in written
