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

    kid: str = Field(
        default="",
        description="Matches the token header's ``kid``; a key without one is tried for every token.",
    )
    secret: SecretStr | None = Field(
        default=None, description="An HMAC secret (HS256, HS384, HS512); give this or ``pem``."
    )
    pem: str = Field(
        default="", description="An RSA or EC public key or certificate in PEM; give this or ``secret``."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if (self.secret is None) == (not self.pem):
            raise ValueError("give exactly one of secret (HMAC) or pem (an RSA or EC public key)")
        if self.secret is not None and len(self.secret.get_secret_value().encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"an HMAC secret must be at least {MIN_SECRET_BYTES} bytes long")
        return self


class JwtConfig(_Model):
    """Params of a ``jwt`` handler; snake_case and camelCase keys are both accepted."""

    issuers: list[str] = Field(
        default_factory=list,
        description="Accepted ``iss`` values; empty: any issuer (the keys alone decide).",
    )
    audiences: list[str] = Field(
        default_factory=list,
        description="The token's ``aud`` must name at least one of these; empty: ``aud`` is not checked.",
    )
    algorithms: list[str] = Field(
        default_factory=lambda: ["RS256", "ES256"],
        min_length=1,
        description="Algorithms a token may be signed with.",
    )
    keys: list[InlineKey] = Field(default_factory=list, description="Keys given inline.")
    jwks_file: str = Field(
        default="", description="A JWKS document on disk, read at start and again every ``refresh_interval``."
    )
    jwks_url: str = Field(
        default="",
        description=(
            "A JWKS URL (``http://`` or ``https://``), fetched at start and every ``refresh_interval``."
        ),
    )
    refresh_interval: PositiveDuration = Field(
        default=timedelta(minutes=5), description="How often ``jwks_file`` and ``jwks_url`` are loaded again."
    )
    min_refresh_interval: NonNegativeDuration = Field(
        default=timedelta(seconds=30),
        description=(
            "A token whose ``kid`` no key has makes the key set load again early, at most this often."
        ),
    )
    fetch_timeout: PositiveDuration = Field(
        default=timedelta(seconds=5), description="Bound on one fetch of ``jwks_url``."
    )
    max_jwks_bytes: int = Field(
        default=1024 * 1024, gt=0, description="Largest JWKS document read; a bigger one is refused."
    )
    max_keys: int = Field(
        default=100, gt=0, description="Keys kept from one JWKS document; the rest are ignored and counted."
    )
    leeway: NonNegativeDuration = Field(
        default=timedelta(seconds=30), description="Clock skew allowed on ``exp``, ``nbf`` and ``iat``."
    )
    required_claims: list[str] = Field(
        default_factory=lambda: ["exp"], description="Claims a token must carry."
    )
    missing_token: MissingToken = Field(
        default=MissingToken.DENY,
        description=(
            "What a Check without a token gets: ``deny`` (UNAUTHENTICATED) or ``allow`` (OK with no claims)."
        ),
    )
    max_token_bytes: int = Field(
        default=16 * 1024, gt=0, description="Longer tokens are refused before any parsing."
    )
    valid_duration: NonNegativeDuration = Field(
        default=timedelta(seconds=60),
        description="How long a proxy may cache an answer (an OK is never cached past the token's ``exp``).",
    )
    valid_use_count: int = Field(
        default=10000, ge=0, description="How many uses a proxy may answer from its cache."
    )

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
