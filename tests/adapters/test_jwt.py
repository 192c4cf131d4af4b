"""jwt: token verification, claims as attributes, key sets from files and URLs, and the runtime end to end."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import jwt
import pytest
import time_machine
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pydantic import ValidationError

from adapters.jwt import JwtConfig, RequestAuthInstance
from adapters.jwt._handler import JwtHandler
from adapters.jwt._token import bearer_token, claim_text
from mixer import CheckResult, Code
from mixer.attributes import AttributeBag, AttributeMatch, Condition
from mixer.config import load_config_text
from mixer.runtime import build_runtime
from plugins.manager import create_plugin_manager

LOG = logging.getLogger("test.jwt")
NOW = 1_700_000_000.0
SECRET = "s3cret-s3cret-s3cret-s3cret-s3cret!"
ISSUER = "https://auth.example.com"


@cache
def rsa_key(n: int = 0) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@cache
def ec_key(n: int = 0) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        data = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        data = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**data, "kid": kid, "use": "sig"}


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"iss": ISSUER, "sub": "alice", "aud": "api", "exp": NOW + 600, "iat": NOW - 5}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def mint(payload: Mapping[str, Any], key: Any = SECRET, alg: str = "HS256", kid: str | None = None) -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(dict(payload), key, algorithm=alg, headers=headers)


@pytest.fixture(autouse=True)
def frozen_clock() -> Iterator[None]:
    # PyJWT judges time claims by the wall clock: it is held at NOW (tokens are minted around it).
    with time_machine.travel(NOW, tick=False):
        yield


def make(params: Mapping[str, Any]) -> JwtHandler:
    return JwtHandler(JwtConfig.model_validate(params), LOG)


HS = {"algorithms": ["HS256"], "keys": [{"secret": SECRET}]}


async def verify(handler: JwtHandler, token: str | None) -> CheckResult:
    return await handler.handle_check(RequestAuthInstance("token.istio-system", token))


# -- tokens and algorithms ----------------------------------------------------------------------


async def test_a_valid_hs256_token_produces_the_request_auth_attributes() -> None:
    handler = make({**HS, "issuers": [ISSUER], "audiences": ["api"]})
    payload = claims(azp="web-app", plan="pro", groups=["dev", "ops"], admin=True, n=3, nested={"a": 1})
    result = await verify(handler, "Bearer " + mint(payload))
    assert result.status.code is Code.OK, result.status
    attrs = result.attributes
    assert attrs["request.auth.principal"] == f"{ISSUER}/alice"
    assert attrs["request.auth.audiences"] == "api"
    assert attrs["request.auth.presenter"] == "web-app"
    assert attrs["request.auth.claims"] == {
        "iss": ISSUER,
        "sub": "alice",
        "aud": "api",
        "exp": "1700000600.0",
        "iat": "1699999995.0",
        "azp": "web-app",
        "plan": "pro",
        "groups": "dev,ops",
        "admin": "true",
        "n": "3",
    }
    raw = attrs["request.auth.raw_claims"]
    assert isinstance(raw, str)
    assert json.loads(raw) == payload
    # Cached no longer than the token lives (600 s) nor than valid_duration (60 s).
    assert result.valid_duration == timedelta(seconds=60)
    assert handler.stats.verified == 1


async def test_an_ok_answer_is_never_cached_past_expiry() -> None:
    handler = make(HS)
    result = await verify(handler, mint(claims(exp=NOW + 7)))
    assert result.status.code is Code.OK
    assert result.valid_duration == timedelta(seconds=7)


@pytest.mark.parametrize("alg", ["RS256", "RS512", "PS256"])
async def test_rsa_tokens_verify_against_an_inline_pem(alg: str) -> None:
    handler = make({"algorithms": [alg], "keys": [{"pem": pem(rsa_key())}]})
    assert (await verify(handler, mint(claims(), rsa_key(), alg))).status.code is Code.OK
    other = mint(claims(), rsa_key(1), alg)
    result = await verify(handler, other)
    assert result.status.code is Code.UNAUTHENTICATED
    assert result.status.message == "signature verification failed"


async def test_es256_tokens_verify_against_an_inline_pem() -> None:
    handler = make({"algorithms": ["ES256"], "keys": [{"kid": "ec1", "pem": pem(ec_key())}]})
    assert (await verify(handler, mint(claims(), ec_key(), "ES256", "ec1"))).status.code is Code.OK
    assert (
        await verify(handler, mint(claims(), ec_key(1), "ES256", "ec1"))
    ).status.code is Code.UNAUTHENTICATED


async def test_a_public_key_is_never_an_hmac_secret() -> None:
    # The classic confusion: sign HS256 with the RSA public key's PEM as the secret.
    public = pem(rsa_key()).encode()
    header = {"alg": "HS256", "typ": "JWT"}
    signing_input = b64(json.dumps(header).encode()) + b"." + b64(json.dumps(claims()).encode())
    forged = (signing_input + b"." + b64(hmac.new(public, signing_input, hashlib.sha256).digest())).decode()
    only_rsa = make({"algorithms": ["RS256"], "keys": [{"pem": pem(rsa_key())}]})
    assert (await verify(only_rsa, forged)).status.message == "algorithm 'HS256' is not accepted"
    both = make({"algorithms": ["RS256", "HS256"], "keys": [{"pem": pem(rsa_key())}]})
    result = await verify(both, forged)
    assert result.status.code is Code.UNAUTHENTICATED
    assert result.status.message == "no HS256 key for a token without kid"


def b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unsigned(payload: Mapping[str, Any]) -> str:
    header = b64(json.dumps({"alg": "none"}).encode())
    return (header + b"." + b64(json.dumps(dict(payload)).encode()) + b".").decode()


@dataclass(frozen=True)
class Refusal:
    name: str
    token: Callable[[], str | None]
    message: str
    reason: str
    params: Mapping[str, Any] = field(default_factory=dict)


REFUSALS = [
    Refusal("no token", lambda: None, "no bearer token", "missing"),
    Refusal("empty", lambda: "", "no bearer token", "missing"),
    Refusal("another scheme", lambda: "Basic YWxpY2U6c2VjcmV0", "no bearer token", "missing"),
    Refusal("unsigned", lambda: _unsigned(claims()), "algorithm 'none' is not accepted", "algorithm"),
    Refusal(
        "two parts", lambda: "abc.def", "malformed token: expected 3 dot-separated parts, got 2", "malformed"
    ),
    Refusal("not base64", lambda: "a$b.c.d", "malformed token: the header is not base64url", "malformed"),
    Refusal("not json", lambda: "YWJj.YWJj.YWJj", "malformed token: the header is not JSON", "malformed"),
    Refusal(
        "too long",
        lambda: mint(claims(pad="x" * 200)),
        "token longer than max_token_bytes (100)",
        "malformed",
        {"max_token_bytes": 100},
    ),
    Refusal(
        "expired", lambda: mint(claims(exp=NOW - 31)), "token expired at 2023-11-14T22:12:49Z", "expired"
    ),
    Refusal(
        "not yet valid",
        lambda: mint(claims(nbf=NOW + 100)),
        "token not valid before 2023-11-14T22:15:00Z",
        "not_yet_valid",
    ),
    Refusal(
        "issued in the future",
        lambda: mint(claims(iat=NOW + 100)),
        "token issued in the future (2023-11-14T22:15:00Z)",
        "not_yet_valid",
    ),
    Refusal(
        "wrong issuer",
        lambda: mint(claims(iss="https://evil.example.com")),
        "issuer 'https://evil.example.com' is not accepted",
        "issuer",
        {"issuers": [ISSUER]},
    ),
    Refusal(
        "wrong audience",
        lambda: mint(claims(aud=["other", "more"])),
        "audience ['other', 'more'] is not accepted",
        "audience",
        {"audiences": ["api"]},
    ),
    Refusal("no exp", lambda: mint(claims(exp=None)), "the token lacks the required claim 'exp'", "claims"),
    Refusal(
        "exp not a number",
        lambda: mint(claims(exp="tomorrow")),
        "claim 'exp' is not a number of seconds",
        "claims",
    ),
    Refusal(
        "exp as digits",
        lambda: mint(claims(exp=str(int(NOW + 600)))),
        "claim 'exp' is not a number of seconds",
        "claims",
    ),
    Refusal(
        "no issuer",
        lambda: mint(claims(iss=None)),
        "issuer None is not accepted",
        "issuer",
        {"issuers": [ISSUER]},
    ),
    Refusal(
        "no audience",
        lambda: mint(claims(aud=None)),
        "audience None is not accepted",
        "audience",
        {"audiences": ["api"]},
    ),
    Refusal(
        "required claim",
        lambda: mint(claims()),
        "the token lacks the required claim 'plan'",
        "claims",
        {"required_claims": ["exp", "plan"]},
    ),
    Refusal(
        "wrong secret",
        lambda: mint(claims(), "another-secret-another-secret-another-secret"),
        "signature verification failed",
        "signature",
    ),
    Refusal(
        "critical header",
        lambda: jwt.encode(claims(), SECRET, "HS256", headers={"crit": ["exp"]}),
        "critical header extensions are not supported",
        "malformed",
    ),
]


@pytest.mark.parametrize("case", REFUSALS, ids=[r.name for r in REFUSALS])
async def test_refusals_are_unauthenticated_and_say_why(case: Refusal) -> None:
    handler = make({**HS, **case.params})
    result = await verify(handler, case.token())
    assert result.status.code is Code.UNAUTHENTICATED
    assert result.status.message == case.message
    assert result.attributes == {}
    assert handler.stats.denied == {case.reason: 1}


async def test_leeway_and_audience_lists() -> None:
    handler = make({**HS, "audiences": ["api"], "leeway": "30s"})
    assert (await verify(handler, mint(claims(exp=NOW - 29, aud=["x", "api"])))).status.code is Code.OK
    assert (await verify(handler, mint(claims(nbf=NOW + 29)))).status.code is Code.OK


async def test_a_not_yet_valid_token_is_refused_only_until_it_becomes_valid() -> None:
    result = await verify(make(HS), mint(claims(nbf=NOW + 40)))
    assert result.valid_duration == timedelta(seconds=10)


async def test_a_missing_token_may_pass_without_claims() -> None:
    handler = make({**HS, "missing_token": "allow"})
    result = await verify(handler, None)
    assert result.status.code is Code.OK
    assert result.attributes == {}
    # A token that is there must still be valid.
    assert (await verify(handler, mint(claims(exp=NOW - 100)))).status.code is Code.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("value", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer   abc ", "abc"),
        ("abc", "abc"),
        ("Basic abc", None),
        ("Bearer ", None),
        (None, None),
    ],
)
def test_bearer_token(value: str | None, token: str | None) -> None:
    assert bearer_token(value) == token


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("a", "a"),
        (True, "true"),
        (3, "3"),
        (1.5, "1.5"),
        (["a", 1], "a,1"),
        ([["a"]], None),
        ({"a": 1}, None),
        (None, None),
    ],
)
def test_claim_text(value: object, text: str | None) -> None:
    assert claim_text(value) == text


# -- config ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"algorithms": ["none"]}, '"none" (unsigned tokens) is never accepted'),
        ({"algorithms": ["HS1"]}, "'HS1' is not supported"),
        ({"algorithms": []}, "at least 1 item"),
        ({"algorithms": ["HS256"], "keys": [{"secret": "short"}]}, "at least 32 bytes"),
        ({"algorithms": ["RS256"], "keys": [{"secret": SECRET}]}, "an HMAC secret needs an HS algorithm"),
        ({"keys": [{"secret": SECRET, "pem": "x"}]}, "exactly one of secret"),
        (
            {"keys": [{"pem": "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----"}]},
            "not a PEM public key",
        ),
        ({"keys": [{"pem": private_pem(rsa_key())}]}, "give the public key, not the private key"),
        ({"algorithms": ["ES384"], "keys": [{"pem": pem(ec_key())}]}, "keys[0]: unusable key"),
        ({"jwks_url": "ftp://example.com/jwks"}, "must be an http or https URL"),
        ({"jwks_url": "http://a/jwks", "jwks_file": "/x"}, "at most one of jwks_file and jwks_url"),
        ({"refresh_interval": "0s"}, "refresh_interval"),
        ({"surely_unknown": 1}, "surely_unknown"),
    ],
)
def test_config_errors(params: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        JwtConfig.model_validate(params)
    assert fragment in str(info.value)


def test_secrets_are_not_shown() -> None:
    config = JwtConfig.model_validate(HS)
    assert SECRET not in repr(config)
    assert SECRET not in config.model_dump_json()


# -- key sets -------------------------------------------------------------------------------------


async def test_a_jwks_file_is_loaded_and_keys_are_found_by_kid(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk(rsa_key(), "r1"), jwk(ec_key(), "e1"), {"kty": "weird"}]}))
    handler = make({"jwks_file": str(path)})
    try:
        assert await handler.refresh()
        assert handler.keys == 2
        assert handler.stats.keys_skipped == 1
        assert (await verify(handler, mint(claims(), rsa_key(), "RS256", "r1"))).status.code is Code.OK
        assert (await verify(handler, mint(claims(), ec_key(), "ES256", "e1"))).status.code is Code.OK
        # The EC key is not a candidate for the RSA kid.
        wrong = await verify(handler, mint(claims(), ec_key(), "ES256", "r1"))
        assert wrong.status.message == "no ES256 key for kid 'r1'"
        assert wrong.valid_duration == timedelta(0)
    finally:
        await handler.shutdown(1.0)


@dataclass
class JwksServer:
    """A JWKS endpoint on 127.0.0.1 whose answer tests change."""

    url: str = ""
    keys: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    requests: int = 0
    delay: float = 0.0


@pytest.fixture
async def jwks_server() -> AsyncIterator[JwksServer]:
    state = JwksServer()

    async def serve(request: web.Request) -> web.Response:
        state.requests += 1
        if state.delay:
            await asyncio.sleep(state.delay)
        return web.json_response({"keys": state.keys}, status=state.status)

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}/.well-known/jwks.json"
    try:
        yield state
    finally:
        await runner.cleanup()


async def test_jwks_url_rotation_is_picked_up_by_the_first_token_with_the_new_kid(
    jwks_server: JwksServer,
) -> None:
    jwks_server.keys = [jwk(rsa_key(), "2024-01")]
    handler = make({"jwks_url": jwks_server.url, "min_refresh_interval": "0s", "refresh_interval": "1h"})
    await handler.start()
    try:
        old = mint(claims(), rsa_key(), "RS256", "2024-01")
        for _ in range(100):
            if handler.keys:
                break
            await asyncio.sleep(0.02)
        assert (await verify(handler, old)).status.code is Code.OK
        assert jwks_server.requests == 1

        # The issuer rotates: the JWKS now has the new key (and still the old one).
        jwks_server.keys = [jwk(ec_key(), "2024-02"), jwk(rsa_key(), "2024-01")]
        new = mint(claims(sub="bob"), ec_key(), "ES256", "2024-02")
        result = await verify(handler, new)
        assert result.status.code is Code.OK, result.status
        assert result.attributes["request.auth.principal"] == f"{ISSUER}/bob"
        assert jwks_server.requests == 2
        assert handler.stats.early_refreshes == 1
    finally:
        await handler.shutdown(1.0)


async def test_unknown_kids_refresh_at_most_once_per_interval_and_share_the_load(
    jwks_server: JwksServer,
) -> None:
    jwks_server.keys = [jwk(rsa_key(), "k1")]
    monotonic = [100.0]
    handler = JwtHandler(
        JwtConfig.model_validate({"jwks_url": jwks_server.url, "min_refresh_interval": "30s"}),
        LOG,
        monotonic=lambda: monotonic[0],
    )
    try:
        assert await handler.refresh()
        assert jwks_server.requests == 1
        forged = [mint(claims(), rsa_key(1), "RS256", f"made-up-{i}") for i in range(20)]
        answers = await asyncio.gather(*(verify(handler, token) for token in forged))
        assert {a.status.code for a in answers} == {Code.UNAUTHENTICATED}
        assert jwks_server.requests == 1, "within min_refresh_interval: no load"

        monotonic[0] += 31
        jwks_server.delay = 0.05
        answers = await asyncio.gather(*(verify(handler, token) for token in forged))
        assert {a.status.message for a in answers} == {
            f"no RS256 key for kid 'made-up-{i}'" for i in range(20)
        }
        assert jwks_server.requests == 2, "one early load, shared by every waiting check"
        assert handler.stats.early_refreshes == 1
    finally:
        await handler.shutdown(1.0)


async def test_a_failed_load_keeps_the_last_good_key_set(jwks_server: JwksServer) -> None:
    jwks_server.keys = [jwk(rsa_key(), "k1")]
    handler = make({"jwks_url": jwks_server.url})
    token = mint(claims(), rsa_key(), "RS256", "k1")
    try:
        assert await handler.refresh()
        for status, keys in [(500, [jwk(rsa_key(), "k1")]), (200, []), (200, [{"kty": "RSA"}])]:
            jwks_server.status, jwks_server.keys = status, keys
            assert not await handler.refresh()
            assert (await verify(handler, token)).status.code is Code.OK
        assert handler.stats.fetch_errors == 3
        assert handler.last_error is not None
        assert "no usable key" in handler.last_error
    finally:
        await handler.shutdown(1.0)


async def test_before_the_first_load_checks_are_unavailable_and_not_cached(jwks_server: JwksServer) -> None:
    jwks_server.status = 503
    handler = make({"jwks_url": jwks_server.url, "min_refresh_interval": "0s"})
    try:
        result = await verify(handler, mint(claims(), rsa_key(), "RS256", "k1"))
        assert result.status.code is Code.UNAVAILABLE
        # The caller gets a generic reason; the key set's URL and the failure are in the log.
        assert result.status.message == "signing keys not loaded"
        assert "answered HTTP 503" in (handler.last_error or "")
        assert result.valid_duration == timedelta(0)
        assert result.valid_use_count == 0
    finally:
        await handler.shutdown(1.0)


async def test_an_oversized_key_set_is_a_failed_load(jwks_server: JwksServer) -> None:
    jwks_server.keys = [jwk(rsa_key(), f"k{i}") for i in range(10)]
    handler = make({"jwks_url": jwks_server.url, "max_jwks_bytes": 1000})
    try:
        assert not await handler.refresh()
        assert "larger than max_jwks_bytes (1000)" in (handler.last_error or "")
    finally:
        await handler.shutdown(1.0)


async def test_max_keys_bounds_the_key_set(jwks_server: JwksServer) -> None:
    jwks_server.keys = [jwk(ec_key(), f"k{i}") for i in range(5)]
    handler = make({"jwks_url": jwks_server.url, "max_keys": 2})
    try:
        assert await handler.refresh()
        assert handler.keys == 2
        assert handler.stats.keys_skipped == 3
    finally:
        await handler.shutdown(1.0)


# -- end to end through the runtime ---------------------------------------------------------------

PLANS_WITH_JWT = f"""
apiVersion: mixer.mesh/v1alpha1
kind: plan
metadata: {{name: free}}
spec:
  limits: [{{name: per_minute, max: 1, per: minute}}]
---
apiVersion: mixer.mesh/v1alpha1
kind: plan
metadata: {{name: pro}}
spec:
  limits: [{{name: per_minute, max: 100, per: minute}}]
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: jwt, namespace: istio-system}}
spec:
  compiledAdapter: jwt
  params:
    issuers: ["{ISSUER}"]
    algorithms: [ES256]
    required_claims: []
    keys: [{{kid: e1, pem: {json.dumps(pem(ec_key()))}}}]
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: token, namespace: istio-system}}
spec:
  compiledTemplate: requestauth
  params:
    token: request.headers["authorization"] | ""
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: plans, namespace: istio-system}}
spec:
  compiledAdapter: memquota
  params:
    subjects: {{trust_plan_claim: true, default_plan: free}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: plancheck, namespace: istio-system}}
spec:
  compiledTemplate: plancheck
  params:
    principal: request.auth.principal | ""
    plan: request.auth.claims["plan"] | ""
---
# Listed before the jwt rule on purpose: producing rules run first whatever the order.
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: plans, namespace: istio-system}}
spec:
  actions: [{{handler: plans, instances: [plancheck]}}]
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: authenticate, namespace: istio-system}}
spec:
  actions: [{{handler: jwt, instances: [token]}}]
"""


async def test_a_plan_claim_in_a_verified_token_picks_the_plan_end_to_end() -> None:
    registry = create_plugin_manager(load_entry_points=False, blocked=()).registry()
    config = load_config_text(PLANS_WITH_JWT, registry, source_name="jwt.yaml", environ={})
    runtime = build_runtime(config, registry)
    await runtime.start()
    try:
        # A real clock here: the token is minted now.
        fresh = claims(exp=time.time() + 300, iat=time.time(), plan="pro")
        token = "Bearer " + mint(fresh, ec_key(), "ES256", "e1")
        bag = AttributeBag({"request.headers": {"authorization": token}})
        outcome = await runtime.check(bag)
        assert outcome.status.code is Code.OK, outcome.status
        assert outcome.headers["x-mixer-plan"] == "pro"
        assert outcome.headers["x-mixer-subject"] == f"{ISSUER}/alice"
        assert outcome.referenced == [AttributeMatch("request.headers", Condition.EXACT, "authorization")]
        # pro allows 100 a minute: a second call passes where free would refuse it.
        assert (await runtime.check(bag)).status.code is Code.OK

        forged = "Bearer " + mint(fresh, ec_key(1), "ES256", "e1")
        refused = await runtime.check(AttributeBag({"request.headers": {"authorization": forged}}))
        assert refused.status.code is Code.UNAUTHENTICATED
        assert refused.status.message.endswith("signature verification failed")
        assert "x-mixer-plan" not in refused.headers

        # No token: refused by the jwt handler (missing_token: deny) before any plan is spent.
        anonymous = await runtime.check(AttributeBag({}))
        assert anonymous.status.code is Code.UNAUTHENTICATED
        assert anonymous.status.message.endswith("no bearer token")
    finally:
        await runtime.shutdown(5.0)


async def test_a_self_asserted_plan_claim_beside_the_jwt_handler_is_not_honoured() -> None:
    # Tokens are optional here: a caller without one sends the claims a token would have carried.
    text = PLANS_WITH_JWT.replace("required_claims: []", "required_claims: []\n    missing_token: allow")
    registry = create_plugin_manager(load_entry_points=False, blocked=()).registry()
    config = load_config_text(text, registry, source_name="jwt.yaml", environ={})
    runtime = build_runtime(config, registry)
    await runtime.start()
    try:
        asserted = [
            AttributeBag(
                {"request.auth.principal": f"{ISSUER}/mallory-{n}", "request.auth.claims": {"plan": "pro"}}
            )
            for n in range(2)
        ]
        first = await runtime.check(asserted[0])
        assert first.status.code is Code.OK, first.status
        # The default plan, as the one anonymous subject: the claim and the principal are ignored.
        assert (first.headers["x-mixer-plan"], first.headers["x-mixer-subject"]) == ("free", "anonymous")
        # free allows one a minute, and a fresh principal is no fresh counter.
        assert (await runtime.check(asserted[1])).status.code is Code.RESOURCE_EXHAUSTED

        # The same claim in a verified token is honoured, under the token's subject.
        fresh = claims(exp=time.time() + 300, iat=time.time(), plan="pro")
        token = "Bearer " + mint(fresh, ec_key(), "ES256", "e1")
        verified = await runtime.check(AttributeBag({"request.headers": {"authorization": token}}))
        assert verified.status.code is Code.OK, verified.status
        assert (verified.headers["x-mixer-plan"], verified.headers["x-mixer-subject"]) == (
            "pro",
            f"{ISSUER}/alice",
        )
    finally:
        await runtime.shutdown(5.0)
