"""The fuzz targets: one function per untrusted-input API, each catching exactly its documented errors.

A target takes the raw bytes a caller could send (a serialized message, an expression, a YAML file,
a request's headers or JSON body) and drives the API the server drives with them. The errors the API
documents are the expected refusals; anything else escapes the target, and the fuzzer reports it as
a crash. Nothing here starts a server or touches the network, so a target runs in microseconds.

The same functions serve the atheris runner (tests/fuzz/run.py) and the pure-Python corpus replay
in tests/fuzz/test_fuzz.py.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from google.protobuf.message import Message
from multidict import CIMultiDict

from mixer.api._common import ServiceLimits
from mixer.api._envoy import EnvoyRequestError, check_limits, parse
from mixer.api.envoy_accesslog import message_bags
from mixer.api.envoy_authz import check_attributes
from mixer.api.envoy_ratelimit import descriptor_attributes, descriptor_hits
from mixer.api.http_check import (
    HttpRefusal,
    _decode_json,
    auth_attributes,
    parse_check_body,
    parse_report_body,
)
from mixer.attributes import ISTIO_MANIFEST, AttributeBag, ValueType, conforms
from mixer.config import ConfigError, load_config_text
from mixer.expr import EvaluationError, ExpressionSyntaxError, ExpressionTypeError, compile
from mixer.proto.envoy.service.accesslog.v3.als_pb2 import StreamAccessLogsMessage
from mixer.proto.envoy.service.auth.v3.external_auth_pb2 import CheckRequest as AuthzCheckRequest
from mixer.proto.envoy.service.ratelimit.v3.rls_pb2 import RateLimitRequest
from mixer.proto.istio.mixer.v1.check_pb2 import CheckRequest as MixerCheckRequest
from mixer.proto.istio.mixer.v1.report_pb2 import ReportRequest
from mixer.registry import Registry
from mixer.wire import GlobalDictionaryMismatch, WireDecodeError, decode_check_request, decode_report_request
from tests.wire._equivalence import decode_with_both

#: Small decoding limits, so inputs the fuzzer can reach also exercise the over-limit refusals.
LIMITS = ServiceLimits(max_attributes=64, max_string_length=256, max_map_entries=32)


@dataclass(frozen=True, slots=True)
class Target:
    """One fuzz target: ``run`` takes one input; ``errors`` are the documented refusals it allows."""

    name: str
    run: Callable[[bytes], None]
    errors: tuple[type[BaseException], ...]
    #: What the target drives, for docs/fuzzing.md and the runner's --list.
    summary: str
    #: The message an input is a serialization of: the runner then mutates it field by field.
    message: type[Message] | None = None


def _touch(bag: AttributeBag) -> None:
    # Reading every value back makes a decoded bag that is inconsistent with itself fail here.
    for name in bag.names():
        bag.get(name)


# --- istio.mixer.v1 ------------------------------------------------------------------------------

WIRE_ERRORS = (WireDecodeError, GlobalDictionaryMismatch)


# Both decoders run on every input (when the compiled one is built): a difference in the bags or in
# the error is a crash (DecodersDisagree).


def mixer_check(data: bytes) -> None:
    try:
        decoded = decode_with_both(
            lambda: decode_check_request(data, max_attributes=64, max_string_length=256, max_map_entries=32)
        )
    except WIRE_ERRORS:
        return
    _touch(decoded.bag)


def mixer_report(data: bytes) -> None:
    try:
        bags = decode_with_both(
            lambda: decode_report_request(data, max_attributes=64, max_string_length=256, max_map_entries=32)
        )
    except WIRE_ERRORS:
        return
    for bag in bags:
        _touch(bag)


# --- Envoy ---------------------------------------------------------------------------------------

ENVOY_ERRORS = (EnvoyRequestError,)


def envoy_authz(data: bytes) -> None:
    """ext_authz Check: parse, then the attributes the service checks (as EnvoyAuthorizationService)."""
    try:
        message: AuthzCheckRequest = parse(AuthzCheckRequest, data)
        attrs = check_attributes(message, limits=LIMITS)
    except ENVOY_ERRORS:
        return
    _touch(AttributeBag(attrs))


def envoy_ratelimit(data: bytes) -> None:
    """RLS ShouldRateLimit: parse, then one bag per descriptor (as EnvoyRateLimitService)."""
    try:
        message: RateLimitRequest = parse(RateLimitRequest, data)
        for descriptor in message.descriptors[: LIMITS.max_map_entries]:
            hits = descriptor_hits(message, descriptor)
            attrs = descriptor_attributes(message.domain, descriptor, hits)
            check_limits(attrs, LIMITS, "RateLimitRequest descriptor")
            _touch(AttributeBag(attrs))
    except ENVOY_ERRORS:
        return


def envoy_accesslog(data: bytes) -> None:
    """ALS StreamAccessLogs: parse one message, then its entries as bags (as EnvoyAccessLogService).

    ``message_bags`` documents no error: an entry it cannot use is counted as invalid.
    """
    try:
        message: StreamAccessLogsMessage = parse(StreamAccessLogsMessage, data)
    except ENVOY_ERRORS:
        return
    identifier = message.identifier if message.HasField("identifier") else None
    kind, bags, invalid = message_bags(message, identifier, LIMITS)
    assert kind in ("", "http", "tcp")
    assert invalid >= 0
    for bag in bags:
        _touch(bag)


# --- expressions ---------------------------------------------------------------------------------

EXPR_ERRORS = (ExpressionSyntaxError, ExpressionTypeError)

#: Expected result types tried in turn (picked by input length), None being "any type".
_EXPECTED: tuple[ValueType | None, ...] = (
    None,
    ValueType.BOOL,
    ValueType.STRING,
    ValueType.INT64,
    ValueType.DURATION,
    None,
    ValueType.IP_ADDRESS,
    ValueType.STRING_MAP,
)

#: A small bag of Istio attributes of every value type, for evaluating what compiles.
FUZZ_BAG = AttributeBag(
    {
        "request.headers": {"user-agent": "curl/8", "x-user": "alice", ":path": "/a?b=c"},
        "request.path": "/api/v1/items?id=3",
        "request.host": "example.com",
        "request.method": "GET",
        "request.size": 128,
        "request.time": datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
        "response.code": 200,
        "response.duration": timedelta(milliseconds=15),
        "source.ip": ipaddress.ip_address("10.0.0.7"),
        "destination.ip": ipaddress.ip_address("2001:db8::1"),
        "source.labels": {"app": "web", "version": "v1"},
        "destination.service.host": "reviews.default.svc.cluster.local",
        "connection.mtls": True,
        "request.auth.principal": "cluster.local/ns/default/sa/web",
    }
)


def expression(data: bytes) -> None:
    """Parse, type-check and compile against Istio's manifest, then evaluate on :data:`FUZZ_BAG`."""
    text = data.decode("utf-8", "replace")
    expected = _EXPECTED[len(data) % len(_EXPECTED)]
    try:
        compiled = compile(text, ISTIO_MANIFEST, expected)
    except EXPR_ERRORS:
        return
    try:
        value = compiled.evaluate(FUZZ_BAG)
    except EvaluationError:
        return
    # The compiled type is a promise about every value: a value outside it is a bug too.
    assert conforms(value, compiled.type), f"{text!r} gave {value!r}, not {compiled.type.name}"
    if isinstance(value, int) and not isinstance(value, bool):
        assert -(2**63) <= value < 2**63, f"{text!r} gave {value}, outside INT64"


# --- config --------------------------------------------------------------------------------------

CONFIG_ERRORS = (ConfigError,)
#: Variables a fuzzed ``${VAR}`` can find, beside the ones it cannot.
CONFIG_ENVIRON: Mapping[str, str] = {"NAMESPACE": "istio-system", "EMPTY": ""}

_registry: Registry | None = None


def _config_registry() -> Registry:
    global _registry  # noqa: PLW0603 - built once per process: adapter discovery is slow
    if _registry is None:
        from plugins.manager import create_plugin_manager

        _registry = create_plugin_manager(load_entry_points=False, blocked=()).registry()
    return _registry


def config(data: bytes) -> None:
    """A YAML file's bytes, decoded as load_config decodes a file, then load_config_text: YAML,
    substitution, validation against the built-in adapters, expression compilation.

    A file that is not UTF-8 is a :class:`ConfigError` in load_config; writing each input to a
    file to find that out would cost more than the rest of the load, so the target checks the
    decoding itself.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return
    try:
        validated = load_config_text(
            text, _config_registry(), source_name="fuzz.yaml", environ=CONFIG_ENVIRON
        )
    except CONFIG_ERRORS:
        return
    assert validated.manifest is not None


# --- HTTP check ----------------------------------------------------------------------------------

HTTP_ERRORS = (HttpRefusal,)


def _headers(text: str) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    for line in text.split("\n"):
        name, _, value = line.partition(":")
        headers.add(name.strip(), value.strip())
    return headers


def http_check(data: bytes) -> None:
    """The first byte picks the route: ``A`` /v1/auth headers (one ``name: value`` a line), ``C`` a
    /v1/check JSON body, anything else a /v1/report JSON body."""
    if not data:
        return
    route, body = data[:1], data[1:]
    try:
        if route == b"A":
            text = body.decode("latin-1")  # as aiohttp decodes header bytes
            auth_attributes(_headers(text), "GET", "127.0.0.1", LIMITS, now=datetime(2024, 1, 1, tzinfo=UTC))
        elif route == b"C":
            bag, _, _ = parse_check_body(_decode_json(body), ISTIO_MANIFEST, LIMITS)
            _touch(bag)
        else:
            for bag in parse_report_body(_decode_json(body), ISTIO_MANIFEST, LIMITS):
                _touch(bag)
    except HTTP_ERRORS:
        return


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            "mixer_check",
            mixer_check,
            WIRE_ERRORS,
            "istio.mixer.v1 CheckRequest: decode_check_request",
            MixerCheckRequest,
        ),
        Target(
            "mixer_report",
            mixer_report,
            WIRE_ERRORS,
            "istio.mixer.v1 ReportRequest: decode_report_request",
            ReportRequest,
        ),
        Target(
            "envoy_authz",
            envoy_authz,
            ENVOY_ERRORS,
            "ext_authz CheckRequest: parse + check_attributes",
            AuthzCheckRequest,
        ),
        Target(
            "envoy_ratelimit",
            envoy_ratelimit,
            ENVOY_ERRORS,
            "RLS RateLimitRequest: parse + descriptor_hits/descriptor_attributes/check_limits",
            RateLimitRequest,
        ),
        Target(
            "envoy_accesslog",
            envoy_accesslog,
            ENVOY_ERRORS,
            "ALS StreamAccessLogsMessage: parse + message_bags",
            StreamAccessLogsMessage,
        ),
        Target(
            "expression",
            expression,
            (*EXPR_ERRORS, EvaluationError),
            "CEXL: compile against ISTIO_MANIFEST, evaluate on a small bag",
        ),
        Target(
            "config",
            config,
            CONFIG_ERRORS,
            "YAML file bytes: UTF-8 decoding + load_config_text with the built-in adapters",
        ),
        Target(
            "http_check",
            http_check,
            HTTP_ERRORS,
            "HTTP: auth_attributes, _decode_json + parse_check_body / parse_report_body",
        ),
    )
}
