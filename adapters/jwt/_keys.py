"""Verification keys: inline secrets and PEM keys, JWKS documents, and lookup by ``kid``.

Each key is prepared once, for every configured algorithm it can verify, when it is loaded; a
check then only looks the key up and verifies. A key is bound to its family: an HMAC secret
verifies only HS algorithms, an RSA key only RS and PS, an EC key only the ES algorithm of its
curve, so a token cannot pick an algorithm that turns a public key into an HMAC secret.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt import PyJWK
from jwt.algorithms import get_default_algorithms
from jwt.exceptions import InvalidKeyError, PyJWKError
from pydantic import SecretStr

_ALGORITHMS = get_default_algorithms()


class KeyParams(Protocol):
    """One key as the params give it (``InlineKey``): an HMAC ``secret`` or a ``pem`` public key."""

    @property
    def kid(self) -> str: ...

    @property
    def secret(self) -> SecretStr | None: ...

    @property
    def pem(self) -> str: ...


class UnusableKey(ValueError):
    """A key that cannot be used: unparsable, of an unsupported type, or too weak."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One key: its ``kid`` (None: tried for any token) and the prepared key per algorithm."""

    kid: str | None
    prepared: Mapping[str, Any]
    #: Where it came from, for messages ("keys[0]", "jwks key 2").
    origin: str


class KeySet:
    """Keys by ``kid``; keys without one are candidates for every token."""

    __slots__ = ("_anonymous", "_by_kid", "_count")

    def __init__(self, keys: Iterable[VerificationKey] = ()) -> None:
        by_kid: dict[str, list[VerificationKey]] = {}
        anonymous: list[VerificationKey] = []
        count = 0
        for key in keys:
            count += 1
            if key.kid is None:
                anonymous.append(key)
            else:
                by_kid.setdefault(key.kid, []).append(key)
        self._by_kid = {kid: tuple(found) for kid, found in by_kid.items()}
        self._anonymous = tuple(anonymous)
        self._count = count

    def candidates(self, kid: str | None, algorithm: str) -> list[Any]:
        """The prepared keys that may have signed a token with this ``kid`` and ``alg``."""
        found: list[Any] = []
        if kid is None:
            for keys in self._by_kid.values():
                found.extend(k.prepared[algorithm] for k in keys if algorithm in k.prepared)
        else:
            found.extend(k.prepared[algorithm] for k in self._by_kid.get(kid, ()) if algorithm in k.prepared)
        found.extend(k.prepared[algorithm] for k in self._anonymous if algorithm in k.prepared)
        return found

    def kids(self) -> list[str]:
        return sorted(self._by_kid)

    def __len__(self) -> int:
        return self._count


def _family(key: object) -> tuple[str, ...]:
    """The algorithm prefixes a key object may verify."""
    if isinstance(key, bytes):
        return ("HS",)
    if isinstance(key, rsa.RSAPublicKey):
        return ("RS", "PS")
    if isinstance(key, ec.EllipticCurvePublicKey):
        return ("ES",)
    return ()


def prepare(key: object, algorithms: Sequence[str], origin: str) -> dict[str, Any]:
    """The key prepared for each algorithm of ``algorithms`` it fits.

    :raises UnusableKey: it fits none of them, or is too weak for those it fits.
    """
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        key = key.public_key()
    prefixes = _family(key)
    if not prefixes:
        raise UnusableKey(f"{origin}: a {type(key).__name__} is not an HMAC, RSA or EC key")
    prepared: dict[str, Any] = {}
    problems: list[str] = []
    for name in algorithms:
        if not name.startswith(prefixes):
            continue
        algorithm = _ALGORITHMS[name]
        try:
            ready = algorithm.prepare_key(key)
        except (InvalidKeyError, TypeError, ValueError) as exc:
            # An EC key on another curve than the algorithm's: not a candidate for it.
            problems.append(f"{name}: {exc}")
            continue
        weak = algorithm.check_key_length(ready)
        if weak:
            problems.append(f"{name}: {weak}")
            continue
        prepared[name] = ready
    if not prepared:
        why = "; ".join(problems) or f"it verifies none of {', '.join(algorithms)}"
        raise UnusableKey(f"{origin}: unusable key: {why}")
    return prepared


def load_pem(text: str, origin: str) -> object:
    """A public key from PEM text (a public key or a certificate; never a private key).

    :raises UnusableKey: the text is neither.
    """
    data = text.strip().encode()
    if b"PRIVATE KEY" in data:
        raise UnusableKey(f"{origin}: give the public key, not the private key")
    try:
        if b"BEGIN CERTIFICATE" in data:
            return x509.load_pem_x509_certificate(data).public_key()
        return load_pem_public_key(data)
    except ValueError as exc:
        raise UnusableKey(f"{origin}: not a PEM public key or certificate: {exc}") from None


def inline_keys(keys: Sequence[KeyParams], algorithms: Sequence[str]) -> list[VerificationKey]:
    """The params' ``keys``, prepared. :raises UnusableKey: one cannot be used (named by index)."""
    loaded: list[VerificationKey] = []
    for i, entry in enumerate(keys):
        origin = f"keys[{i}]"
        material: object
        if entry.secret is not None:
            material = entry.secret.get_secret_value().encode()
        else:
            material = load_pem(entry.pem, origin)
        loaded.append(VerificationKey(entry.kid or None, prepare(material, algorithms, origin), origin))
    return loaded


@dataclass(frozen=True, slots=True)
class ParsedKeySet:
    keys: list[VerificationKey]
    #: Keys left out: not for signatures, unsupported, weak, malformed, or beyond ``max_keys``.
    skipped: list[str]


def parse_jwks(body: bytes, algorithms: Sequence[str], max_keys: int) -> ParsedKeySet:
    """A JWKS document (``{"keys": [...]}``, RFC 7517), keeping at most ``max_keys`` usable keys.

    :raises ValueError: the document is not a JWKS, or holds no usable key.
    """
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('not a JWKS: expected an object with a "keys" list')
    keys: list[VerificationKey] = []
    skipped: list[str] = []
    for i, jwk in enumerate(document["keys"]):
        origin = f"jwks key {i}"
        if len(keys) >= max_keys:
            skipped.append(f"{origin}: more than max_keys ({max_keys})")
            continue
        try:
            keys.append(_jwk_key(jwk, algorithms, origin))
        except UnusableKey as exc:
            skipped.append(str(exc))
    if not keys:
        detail = f" ({'; '.join(skipped[:3])})" if skipped else ""
        raise ValueError(f"no usable key in the JWKS{detail}")
    return ParsedKeySet(keys, skipped)


def _jwk_key(jwk: object, algorithms: Sequence[str], origin: str) -> VerificationKey:
    if not isinstance(jwk, dict):
        raise UnusableKey(f"{origin}: not a JSON object")
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise UnusableKey(f"{origin}: kid is not a string")
    if jwk.get("use", "sig") != "sig":
        raise UnusableKey(f"{origin}: for use {jwk.get('use')!r}, not signatures")
    wanted = jwk.get("alg")
    if wanted is not None and wanted not in algorithms:
        raise UnusableKey(f"{origin}: its alg {wanted!r} is not among the accepted algorithms")
    try:
        material = PyJWK(jwk).key
    except (PyJWKError, InvalidKeyError, ValueError, TypeError) as exc:
        raise UnusableKey(f"{origin}: {exc}") from None
    # A JWK that names its algorithm verifies only that one.
    allowed = [wanted] if isinstance(wanted, str) else list(algorithms)
    return VerificationKey(kid, prepare(material, allowed, origin), origin)
