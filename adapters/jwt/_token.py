"""Reading a compact JWS token and turning verified claims into ``request.auth.*`` attributes."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from mixer.attributes import AttributeValue

_SEGMENT = re.compile(rb"[A-Za-z0-9_-]*")


class MalformedToken(ValueError):
    """Not a compact JWS with a JSON header and a JSON object payload."""


@dataclass(frozen=True, slots=True)
class CompactToken:
    """What the handler reads of a token itself: PyJWT verifies the signature."""

    header: dict[str, Any]
    #: The decoded payload bytes (the claims JSON as the issuer wrote it).
    payload: bytes


def bearer_token(value: str | None) -> str | None:
    """The token in ``value``: a bare token, or ``Bearer <token>`` (the scheme in any case).

    None when there is none, including a value with another scheme (``Basic ...``).
    """
    if not value:
        return None
    text = value.strip()
    if text.lower() == "bearer":
        return None
    scheme, space, rest = text.partition(" ")
    if space:
        if scheme.lower() != "bearer":
            return None
        text = rest.strip()
    return text or None


def _b64(segment: bytes, what: str) -> bytes:
    if not _SEGMENT.fullmatch(segment):
        raise MalformedToken(f"{what} is not base64url")
    try:
        return base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise MalformedToken(f"{what} is not base64url") from None


def parse_compact(token: str) -> CompactToken:
    """Split and decode ``header.payload.signature``. :raises MalformedToken: it is not one."""
    try:
        data = token.encode("ascii")
    except UnicodeEncodeError:
        raise MalformedToken("the token is not ASCII") from None
    parts = data.split(b".")
    if len(parts) != 3:
        raise MalformedToken(f"expected 3 dot-separated parts, got {len(parts)}")
    header_b64, payload_b64, signature_b64 = parts
    header = _json_object(_b64(header_b64, "the header"), "the header")
    payload = _b64(payload_b64, "the payload")
    # Decoded only to refuse a malformed signature with the same reason as the other parts.
    _b64(signature_b64, "the signature")
    return CompactToken(header, payload)


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    # The token's length is bounded before parsing; deep nesting ends in RecursionError, caught.
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise MalformedToken(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise MalformedToken(f"{what} is not a JSON object")
    return value


def claims_of(payload: bytes) -> dict[str, Any]:
    """The claims object of a verified payload. :raises MalformedToken: not a JSON object."""
    return _json_object(payload, "the payload")


def claim_text(value: object) -> str | None:
    """A claim as a string-map value: strings as they are, numbers and booleans as JSON text,
    lists of those joined by ``,``; None for objects, nested lists and null."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, list):
        items = [claim_text(item) if not isinstance(item, list | dict) else None for item in value]
        if any(item is None for item in items):
            return None
        return ",".join(item for item in items if item is not None)
    return None


def claim_attributes(claims: dict[str, Any], payload: bytes) -> dict[str, AttributeValue]:
    """The ``request.auth.*`` attributes of verified claims, as Istio's proxies produced them."""
    flat: dict[str, str] = {}
    for name, value in claims.items():
        text = claim_text(value)
        if text is not None:
            flat[name] = text
    attributes: dict[str, AttributeValue] = {
        "request.auth.claims": flat,
        "request.auth.raw_claims": payload.decode("utf-8"),
    }
    issuer, subject = claims.get("iss"), claims.get("sub")
    if isinstance(issuer, str) and isinstance(subject, str):
        attributes["request.auth.principal"] = f"{issuer}/{subject}"
    audiences = claim_text(claims.get("aud"))
    if audiences is not None:
        attributes["request.auth.audiences"] = audiences
    presenter = claims.get("azp")
    if isinstance(presenter, str):
        attributes["request.auth.presenter"] = presenter
    return attributes
