"""The demo JWT keys and tokens of deploy/config/demo-jwt say what its README and the docs say."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest

DEMO = Path(__file__).resolve().parents[2] / "deploy" / "config" / "demo-jwt"
ISSUER = "https://demo.mesh-mixer.invalid"


def _public_key() -> jwt.PyJWK:
    [key] = json.loads((DEMO / "jwks.json").read_text())["keys"]
    assert key["kid"] == "demo-2026"
    return jwt.PyJWK(key)


def _claims(name: str) -> dict[str, object]:
    token = (DEMO / f"{name}.jwt").read_text().strip()
    assert jwt.get_unverified_header(token)["kid"] == "demo-2026"
    claims: dict[str, object] = jwt.decode(token, _public_key().key, algorithms=["ES256"], issuer=ISSUER)
    return claims


def test_the_long_lived_tokens_carry_the_documented_claims() -> None:
    pro = _claims("pro-customer")
    assert (pro["sub"], pro["plan"], pro["groups"]) == ("dana", "pro", ["customers"])
    free = _claims("free-visitor")
    assert (free["sub"], free["plan"]) == ("erin", "free")
    assert "groups" not in free
    # Far enough ahead that the docs' examples keep working.
    assert all(isinstance(c["exp"], int) and c["exp"] > time.time() + 50 * 365 * 86400 for c in (pro, free))


def test_the_expired_token_is_expired() -> None:
    with pytest.raises(jwt.ExpiredSignatureError):
        _claims("expired")


def test_the_demo_signing_key_is_the_private_half_and_marked_as_a_demo() -> None:
    text = (DEMO / "demo-signing-key.pem").read_text()
    assert text.startswith("# DEMO KEY")
    pem = text[text.index("-----BEGIN") :]
    token = jwt.encode({"iss": ISSUER, "sub": "t"}, pem, algorithm="ES256", headers={"kid": "demo-2026"})
    assert jwt.decode(token, _public_key().key, algorithms=["ES256"], issuer=ISSUER)["sub"] == "t"
    assert "never use" in (DEMO / "README.md").read_text().lower()
