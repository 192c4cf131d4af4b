"""A handler's ``connection``: address, timeout and TLS, as in Mixer's ``Connection``
(istio.policy.v1beta1, cfg.proto)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

import grpc
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from mixer.params import Duration

__all__ = ["Authentication", "Connection", "MutualTls", "Tls", "open_channel"]

#: How long one call to an adapter may take when the connection says nothing.
DEFAULT_TIMEOUT = timedelta(seconds=5)
#: A token or certificate file larger than this is refused (a CA bundle may be large).
MAX_CREDENTIAL_BYTES = 4 * 1024 * 1024
#: Mixer trusted the system's public roots besides the configured CA.
SYSTEM_CA_FILE = "/etc/ssl/certs/ca-certificates.crt"


class _Model(BaseModel):
    # Istio wrote these in either spelling (proto names or their JSON names).
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)


class Tls(_Model):
    """Server-authenticated TLS, with an optional token sent on every call."""

    ca_certificates: str = ""
    token_path: str = ""
    auth_header: Literal["PLAIN", "BEARER"] | None = None
    custom_header: str = ""
    server_name: str = ""
    oauth: dict[str, object] | None = None

    @model_validator(mode="after")
    def _supported(self) -> Tls:
        if self.oauth is not None:
            raise ValueError("oauth token sources are not supported; use token_path")
        if self.auth_header and self.custom_header:
            raise ValueError("give auth_header or custom_header, not both")
        return self


class MutualTls(_Model):
    private_key: str = Field(min_length=1)
    client_certificate: str = Field(min_length=1)
    ca_certificates: str = ""
    server_name: str = ""


class Authentication(_Model):
    tls: Tls | None = None
    mutual: MutualTls | None = None

    @model_validator(mode="after")
    def _one(self) -> Authentication:
        if self.tls is not None and self.mutual is not None:
            raise ValueError("give tls or mutual, not both")
        return self


class Connection(_Model):
    address: str = Field(min_length=1)
    timeout: Duration = DEFAULT_TIMEOUT
    authentication: Authentication | None = None

    @model_validator(mode="after")
    def _positive(self) -> Connection:
        if self.timeout <= timedelta(0):
            raise ValueError("timeout must be more than 0")
        return self


def _roots(ca_file: str) -> bytes | None:
    """The system roots plus ``ca_file`` (None: gRPC's default roots)."""
    if not ca_file:
        return None
    system = Path(SYSTEM_CA_FILE)
    public = _read(str(system)) if system.is_file() else b""
    return public + b"\n" + _read(ca_file)


def _read(path: str) -> bytes:
    data = Path(path).read_bytes()
    if len(data) > MAX_CREDENTIAL_BYTES:
        raise ValueError(f"{path} is larger than {MAX_CREDENTIAL_BYTES} bytes")
    return data


def open_channel(connection: Connection) -> grpc.aio.Channel:
    """A channel to the adapter (it connects on first use). Reads the TLS files now.

    :raises OSError, ValueError: a certificate or key file cannot be read.
    """
    auth = connection.authentication
    options: list[tuple[str, object]] = [("grpc.enable_retries", 0)]
    if auth is None or (auth.tls is None and auth.mutual is None):
        return grpc.aio.insecure_channel(connection.address, options=options)
    if auth.mutual is not None:
        mutual = auth.mutual
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_roots(mutual.ca_certificates),
            private_key=_read(mutual.private_key),
            certificate_chain=_read(mutual.client_certificate),
        )
        server_name = mutual.server_name
    else:
        assert auth.tls is not None
        tls = auth.tls
        credentials = grpc.ssl_channel_credentials(root_certificates=_roots(tls.ca_certificates))
        server_name = tls.server_name
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return grpc.aio.secure_channel(connection.address, credentials, options=options)


def call_metadata(connection: Connection) -> tuple[tuple[str, str], ...]:
    """The token header of every call, read from ``token_path`` each time (tokens rotate)."""
    auth = connection.authentication
    tls = auth.tls if auth is not None else None
    if tls is None or not tls.token_path:
        return ()
    token = _read(tls.token_path).decode().strip()
    if tls.custom_header:
        return ((tls.custom_header.lower(), token),)
    if tls.auth_header == "BEARER":
        return (("authorization", f"Bearer {token}"),)
    return (("authorization", token),)
