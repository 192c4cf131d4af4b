"""The zipkin adapter's params: the collector URL, headers, TLS and delivery."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from mixer.delivery import DeliveryOptions
from mixer.params import PositiveDuration

__all__ = ["DEFAULT_URL", "ZipkinConfig", "ZipkinTls"]

#: A Zipkin server on this host, its v2 JSON span endpoint.
DEFAULT_URL = "http://127.0.0.1:9411/api/v2/spans"

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_VALUE = re.compile(r"[\x20-\x7e\t]*")
# The sender sets these itself; a configured value would contradict the body.
_RESERVED_HEADERS = frozenset(
    {"content-type", "content-encoding", "content-length", "host", "transfer-encoding"}
)


class ZipkinTls(BaseModel):
    """Client TLS settings for an ``https`` URL."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: str = Field(
        default="", description="PEM file of the CAs to trust; empty trusts the system's roots."
    )
    cert_file: str = Field(
        default="", description="PEM client certificate and its key, for mutual TLS (both or neither)."
    )
    key_file: str = Field(default="", description="PEM private key of ``cert_file``.")
    insecure_skip_verify: bool = Field(
        default=False, description="Skip verifying the server certificate (tests and labs only)."
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("tls.cert_file and tls.key_file go together")
        return self

    @property
    def configured(self) -> bool:
        return self != ZipkinTls()


class ZipkinConfig(BaseModel):
    """Params of a ``zipkin`` handler."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(default=DEFAULT_URL, description="Where spans are POSTed (Zipkin's v2 JSON endpoint).")
    headers: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="HTTP headers sent with every request (for example ``Authorization``); shown redacted.",
    )
    tls: ZipkinTls = Field(
        default=ZipkinTls(), description="TLS client settings, used when the URL is ``https``."
    )
    timeout: PositiveDuration = Field(
        default=timedelta(seconds=10), description="Deadline of one POST, connecting included."
    )
    compression: Literal["none", "gzip"] = Field(
        default="none",
        description=(
            "``gzip`` compresses request bodies (Content-Encoding: gzip), which Zipkin servers accept."
        ),
    )
    delivery: DeliveryOptions = Field(
        default=DeliveryOptions(),
        description="Queueing, batching, retry and spooling (see docs/delivery.md).",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip()
        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"url {value!r}: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url {value!r} is not an http:// or https:// URL with a host")
        if port == 0:
            raise ValueError(f"url {value!r}: port 0")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, value in headers.items():
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"header {name!r} is not a valid HTTP header name")
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is set by the adapter and cannot be configured")
            if not _HEADER_VALUE.fullmatch(value.get_secret_value()):
                raise ValueError(f"header {name!r}: the value must be printable ASCII")
        return headers

    @model_validator(mode="after")
    def _tls_needs_https(self) -> Self:
        if self.tls.configured and not self.url.startswith("https:"):
            raise ValueError("tls settings need an https:// url")
        return self
