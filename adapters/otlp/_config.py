"""The otlp adapter's params: where to export, how to authenticate, and delivery."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from mixer.delivery import DeliveryOptions
from mixer.params import PositiveDuration

__all__ = ["DEFAULT_ENDPOINT", "OtlpConfig", "TlsOptions", "parse_endpoint"]

#: The OTLP/gRPC port an OpenTelemetry Collector listens on, on this host.
DEFAULT_ENDPOINT = "127.0.0.1:4317"

_HOST_PORT = re.compile(
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?):(?P<port>\d{1,5})"
)
# gRPC metadata keys: lowercase token characters; "-bin" keys would need bytes values.
_HEADER_KEY = re.compile(r"[0-9a-z_.-]+")
_HEADER_VALUE = re.compile(r"[\x20-\x7e]*")


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` (an IPv6 host in brackets) into host and port.

    :raises ValueError: not ``host:port``, or the port is outside 1..65535.
    """
    match = _HOST_PORT.fullmatch(endpoint.strip())
    if match is None:
        raise ValueError(f"endpoint {endpoint!r} is not host:port (an IPv6 address in brackets)")
    port = int(match["port"])
    if not 0 < port < 65536:
        raise ValueError(f"endpoint {endpoint!r}: port must be 1..65535")
    return match["host"], port


class TlsOptions(BaseModel):
    """Transport security, named as in the OpenTelemetry Collector's exporters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    insecure: bool = Field(
        default=True,
        description="Plaintext gRPC (the default suits a collector on this host); false connects with TLS.",
    )
    ca_file: str = Field(
        default="", description="PEM file of the CAs to trust; empty trusts the system's roots."
    )
    cert_file: str = Field(
        default="", description="PEM client certificate and its key, for mutual TLS (both or neither)."
    )
    key_file: str = Field(default="", description="PEM private key of ``cert_file``.")
    server_name_override: str = Field(
        default="",
        description="The name the server certificate is checked against, when it is not the endpoint's host.",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.insecure and (self.ca_file or self.cert_file or self.key_file or self.server_name_override):
            raise ValueError(
                "tls.ca_file, cert_file, key_file and server_name_override need tls.insecure: false"
            )
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("tls.cert_file and tls.key_file go together")
        return self


class OtlpConfig(BaseModel):
    """Params of an ``otlp`` handler."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: str = Field(default=DEFAULT_ENDPOINT, description="The collector's OTLP/gRPC ``host:port``.")
    headers: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="gRPC metadata sent with every export (for example ``authorization``); shown redacted.",
    )
    tls: TlsOptions = Field(
        default=TlsOptions(),
        description="TLS to the collector; plaintext unless ``insecure: false``.",
    )
    timeout: PositiveDuration = Field(
        default=timedelta(seconds=10), description="Deadline of one export call."
    )
    compression: Literal["gzip", "none"] = Field(
        default="gzip", description="Message compression on the wire."
    )
    delivery: DeliveryOptions = Field(
        default=DeliveryOptions(),
        description="Queueing, batching, retry and spooling (see docs/delivery.md).",
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        parse_endpoint(value)
        return value.strip()

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, SecretStr]) -> dict[str, SecretStr]:
        checked: dict[str, SecretStr] = {}
        for key, value in headers.items():
            name = key.strip().lower()
            if not _HEADER_KEY.fullmatch(name) or name.startswith("grpc-") or name.endswith("-bin"):
                raise ValueError(
                    f"header {key!r}: want a gRPC metadata name (letters, digits, '-', '_', '.'), "
                    "not starting with 'grpc-' nor ending with '-bin'"
                )
            if not _HEADER_VALUE.fullmatch(value.get_secret_value()):
                raise ValueError(f"header {key!r}: the value must be printable ASCII")
            checked[name] = value
        return checked
