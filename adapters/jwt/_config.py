"""The jwt adapter's params: where keys come from, what a token must say, how answers are cached."""

from __future__ import annotations

import enum
from datetime import timedelta
from typing import Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic.alias_generators import to_camel

from mixer.params import NonNegativeDuration, PositiveDuration

#: Every algorithm the adapter verifies. "none" is never one of them, whatever the config says.
SUPPORTED_ALGORITHMS = (
    "HS256",
    "HS384",
    "HS512",
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
)
#: HMAC secrets shorter than this are refused (RFC 7518 3.2: at least the hash size; 256 bits for HS256).
MIN_SECRET_BYTES = 32

_SCHEMES = ("http", "https")


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, validate_by_name=True, validate_by_alias=True
    )


class MissingToken(enum.StrEnum):
    """What a Check without a token gets."""

    #: UNAUTHENTICATED: every request must carry a valid token.
    DENY = "deny"
    #: OK with no claims: later rules decide what an anonymous caller may do.
    ALLOW = "allow"


class InlineKey(_Model):
    """One key given in the params: an HMAC ``secret`` or a ``pem`` public key (or certificate)."""

    #: Matches the token header's ``kid``; a key without one is tried for every token.
    kid: str = ""
    secret: SecretStr | None = None
    pem: str = ""

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if (self.secret is None) == (not self.pem):
            raise ValueError("give exactly one of secret (HMAC) or pem (an RSA or EC public key)")
        if self.secret is not None and len(self.secret.get_secret_value().encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"an HMAC secret must be at least {MIN_SECRET_BYTES} bytes long")
        return self


class JwtConfig(_Model):
    """Params of a ``jwt`` handler; snake_case and camelCase keys are both accepted."""

    #: Accepted ``iss`` values; empty: any issuer (the keys alone decide).
    issuers: list[str] = Field(default_factory=list)
    #: The token's ``aud`` must name at least one of these; empty: ``aud`` is not checked.
    audiences: list[str] = Field(default_factory=list)
    #: Algorithms a token may be signed with.
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"], min_length=1)
    #: Keys given inline.
    keys: list[InlineKey] = Field(default_factory=list)
    #: A JWKS document on disk, read at start and again every ``refresh_interval``.
    jwks_file: str = ""
    #: A JWKS URL (``http://`` or ``https://``), fetched at start and every ``refresh_interval``.
    jwks_url: str = ""
    refresh_interval: PositiveDuration = timedelta(minutes=5)
    #: A token whose ``kid`` no key has makes the key set load again early, at most this often.
    min_refresh_interval: NonNegativeDuration = timedelta(seconds=30)
    fetch_timeout: PositiveDuration = timedelta(seconds=5)
    max_jwks_bytes: int = Field(default=1024 * 1024, gt=0)
    #: Keys kept from one JWKS document; the rest are ignored and counted.
    max_keys: int = Field(default=100, gt=0)
    #: Clock skew allowed on ``exp``, ``nbf`` and ``iat``.
    leeway: NonNegativeDuration = timedelta(seconds=30)
    #: Claims a token must carry.
    required_claims: list[str] = Field(default_factory=lambda: ["exp"])
    missing_token: MissingToken = MissingToken.DENY
    #: Longer tokens are refused before any parsing.
    max_token_bytes: int = Field(default=16 * 1024, gt=0)
    #: How long a proxy may cache an answer (an OK is never cached past the token's ``exp``).
    valid_duration: NonNegativeDuration = timedelta(seconds=60)
    valid_use_count: int = Field(default=10000, ge=0)

    @field_validator("algorithms")
    @classmethod
    def _known_algorithms(cls, algorithms: list[str]) -> list[str]:
        for i, name in enumerate(algorithms):
            if name.strip().lower() == "none":
                raise ValueError(f'algorithms[{i}]: "none" (unsigned tokens) is never accepted')
            if name not in SUPPORTED_ALGORITHMS:
                supported = ", ".join(SUPPORTED_ALGORITHMS)
                raise ValueError(f"algorithms[{i}]: {name!r} is not supported (supported: {supported})")
        return list(dict.fromkeys(algorithms))

    @field_validator("jwks_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if url:
            parts = urlsplit(url)
            if parts.scheme not in _SCHEMES or not parts.hostname:
                raise ValueError(f"jwks_url must be an http or https URL with a host, got {url!r}")
        return url

    @model_validator(mode="after")
    def _keys_fit_algorithms(self) -> Self:
        if self.jwks_file and self.jwks_url:
            raise ValueError("give at most one of jwks_file and jwks_url")
        hmac = any(name.startswith("HS") for name in self.algorithms)
        asymmetric = any(not name.startswith("HS") for name in self.algorithms)
        for i, key in enumerate(self.keys):
            if key.secret is not None and not hmac:
                raise ValueError(f"keys[{i}]: an HMAC secret needs an HS algorithm in algorithms")
            if key.pem and not asymmetric:
                raise ValueError(f"keys[{i}]: a public key needs an RS, PS or ES algorithm in algorithms")
        # Parsed now so that a bad key is a config error rather than a failed start.
        from adapters.jwt._keys import inline_keys

        inline_keys(self.keys, self.algorithms)
        return self
