"""Attribute-producing check handlers: they run first, and the rest of the Check sees what they produced."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from mixer.adapter import AdapterInfo, CheckHandler, CheckResult, HandlerEnv
from mixer.attributes import ISTIO_MANIFEST, AttributeBag, AttributeMatch, AttributeValue, Condition
from mixer.config import HandlerConfig, ValidatedConfig
from mixer.expr import compile as compile_expression
from mixer.registry import Registry
from mixer.runtime import QuotaRequest, Runtime, build_runtime
from mixer.runtime._produced import FieldSources, ProducedBag
from mixer.status import Code, Status
from mixer.templates import (
    BUILTIN_TEMPLATES,
    Instance,
    ListEntryInstance,
    PlanCheckInstance,
    field_is_verified,
)
from tests.runtime.support import (
    NS,
    SOURCE,
    TEST_ADAPTER,
    RecordingHandler,
    config,
    fq,
    handler,
    header_op,
    instance,
    rule,
)

EXACT, ABSENCE = Condition.EXACT, Condition.ABSENCE


class ProducerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: Produced for a listentry whose value is "good-<user>"; other values are UNAUTHENTICATED.
    claims: dict[str, str] = {}
    principal_prefix: str = "issuer/"
    valid_seconds: float = 30.0
    #: Produce a value of the wrong type for request.auth.principal.
    wrong_type: bool = False


class Producer(CheckHandler):
    def __init__(self, params: BaseModel, env: HandlerEnv) -> None:
        assert isinstance(params, ProducerParams)
        self.params = params
        self.calls: list[Instance] = []

    async def handle_check(self, instance: Instance) -> CheckResult:
        self.calls.append(instance)
        assert isinstance(instance, ListEntryInstance)
        value = str(instance.value)
        if not value.startswith("good-"):
            return CheckResult(Status(Code.UNAUTHENTICATED, "bad token"), timedelta(seconds=5), 10)
        principal: AttributeValue = 42 if self.params.wrong_type else self.params.principal_prefix + value[5:]
        produced: dict[str, AttributeValue] = {
            "request.auth.principal": principal,
            "request.auth.claims": dict(self.params.claims),
        }
        return CheckResult(Status(), timedelta(seconds=self.params.valid_seconds), 100, attributes=produced)


PRODUCER = AdapterInfo(
    "producer",
    "produces request.auth attributes",
    frozenset({"listentry"}),
    ProducerParams,
    Producer,
    produces_attributes=True,
)


def registry() -> Registry:
    return Registry.build([TEST_ADAPTER, PRODUCER], BUILTIN_TEMPLATES)


def producer(name: str = "auth", **params: Any) -> HandlerConfig:
    return HandlerConfig(fq(name), NS, "producer", ProducerParams(**params), SOURCE)


TOKEN = instance("token", "listentry", value='request.headers["authorization"] | ""')
PLAN = instance("plan", "listentry", value='request.auth.claims["plan"] | "none"')


def runtime(cfg: ValidatedConfig) -> Runtime:
    return build_runtime(cfg, registry())


def the(rt: Runtime, name: str) -> Any:
    return rt.handlers[fq(name)]


def bag(token: str, **values: AttributeValue) -> AttributeBag:
    return AttributeBag({"request.headers": {"authorization": token}, **values})


def basic_config(**producer_params: Any) -> ValidatedConfig:
    # The consumer's rule comes first in the config: producing rules run first all the same.
    return config(
        [handler("gate"), producer(**producer_params)],
        [TOKEN, PLAN],
        [
            rule("planned", 'request.auth.principal | "" != ""', (fq("gate"), [fq("plan")])),
            rule("authenticate", None, (fq("auth"), [fq("token")])),
        ],
    )


async def test_later_rules_and_their_instances_see_the_produced_attributes() -> None:
    rt = runtime(basic_config(claims={"plan": "pro"}))
    outcome = await rt.check(bag("good-alice"))
    assert outcome.status.code is Code.OK
    gate: RecordingHandler = the(rt, "gate")
    assert [i.value for i in gate.checks if isinstance(i, ListEntryInstance)] == ["pro"]
    assert len(the(rt, "auth").calls) == 1


async def test_references_name_what_the_producer_read_never_the_produced_attributes() -> None:
    rt = runtime(basic_config(claims={"plan": "pro"}))
    outcome = await rt.check(bag("good-alice"))
    # The rule match read request.auth.principal and the instance request.auth.claims["plan"]:
    # both stand for the token they were produced from.
    assert outcome.referenced == [AttributeMatch("request.headers", EXACT, "authorization")]


async def test_a_producer_refusal_decides_the_check_alone() -> None:
    rt = runtime(basic_config(claims={"plan": "pro"}))
    outcome = await rt.check(bag("forged"))
    assert outcome.status == Status(Code.UNAUTHENTICATED, f"{fq('auth')}:bad token")
    assert outcome.valid_duration == timedelta(seconds=5)
    gate: RecordingHandler = the(rt, "gate")
    assert gate.checks == []


async def test_quotas_see_produced_attributes_and_reference_the_token() -> None:
    cfg = config(
        [handler("mq"), producer(claims={"plan": "pro"})],
        [TOKEN, instance("requestcount", "quota", dimensions={"plan": 'request.auth.claims["plan"] | "x"'})],
        [
            rule("authenticate", None, (fq("auth"), [fq("token")])),
            rule("count", None, (fq("mq"), [fq("requestcount")])),
        ],
    )
    rt = runtime(cfg)
    outcome = await rt.check(bag("good-bob"), {"requestcount": QuotaRequest(1)})
    mq: RecordingHandler = the(rt, "mq")
    assert [q.dimensions for q, _ in mq.quotas] == [{"plan": "pro"}]
    assert outcome.quotas["requestcount"].referenced == [
        AttributeMatch("request.headers", EXACT, "authorization")
    ]


async def test_producer_answer_takes_part_in_the_validity() -> None:
    rt = runtime(basic_config(claims={"plan": "pro"}, valid_seconds=3))
    outcome = await rt.check(bag("good-alice"))
    assert outcome.valid_duration == timedelta(seconds=3)
    assert outcome.valid_use_count == 100


async def test_attributes_of_the_wrong_type_are_dropped_and_counted() -> None:
    rt = runtime(basic_config(claims={"plan": "pro"}, wrong_type=True))
    outcome = await rt.check(bag("good-alice"))
    assert outcome.status.code is Code.OK
    # principal was dropped, so the gate's rule does not match; the claims still arrived.
    gate: RecordingHandler = the(rt, "gate")
    assert gate.checks == []
    assert rt.stats.handler_errors == {fq("auth"): 1}


async def test_a_rule_with_both_kinds_of_actions_is_split() -> None:
    cfg = config(
        [handler("gate"), producer(claims={"plan": "enterprise"})],
        [TOKEN, PLAN],
        [
            rule(
                "both",
                None,
                (fq("gate"), [fq("plan")]),
                (fq("auth"), [fq("token")]),
                request_headers=[header_op("x-plan", 'request.auth.claims["plan"] | "none"')],
            )
        ],
    )
    rt = runtime(cfg)
    outcome = await rt.check(bag("good-carol"))
    gate: RecordingHandler = the(rt, "gate")
    assert [i.value for i in gate.checks if isinstance(i, ListEntryInstance)] == ["enterprise"]
    assert [(op.name, op.value) for op in outcome.request_header_operations] == [("x-plan", "enterprise")]


async def test_later_producers_win_and_unproduced_attributes_come_from_the_request() -> None:
    cfg = config(
        [
            handler("gate"),
            producer("first", claims={"plan": "free"}),
            producer("second", claims={"plan": "pro"}),
        ],
        [TOKEN, instance("who", "listentry", value='request.auth.claims["plan"] + "/" + source.name')],
        [
            rule("one", None, (fq("first"), [fq("token")])),
            rule("two", None, (fq("second"), [fq("token")])),
            rule("use", None, (fq("gate"), [fq("who")])),
        ],
    )
    rt = runtime(cfg)
    outcome = await rt.check(bag("good-dan", **{"source.name": "web"}))
    gate: RecordingHandler = the(rt, "gate")
    assert [i.value for i in gate.checks if isinstance(i, ListEntryInstance)] == ["pro/web"]
    assert AttributeMatch("source.name", EXACT) in outcome.referenced


async def test_without_producers_nothing_changes() -> None:
    cfg = config([handler("gate")], [PLAN], [rule("use", None, (fq("gate"), [fq("plan")]))])
    rt = runtime(cfg)
    outcome = await rt.check(AttributeBag({"request.auth.claims": {"plan": "sent-by-proxy"}}))
    gate: RecordingHandler = the(rt, "gate")
    assert [i.value for i in gate.checks if isinstance(i, ListEntryInstance)] == ["sent-by-proxy"]
    assert outcome.referenced == [AttributeMatch("request.auth.claims", EXACT, "plan")]


@pytest.mark.parametrize(
    ("produced", "request_values", "expected"),
    [
        ({"a": "1"}, {"b": "2"}, {"a": "1", "b": "2"}),
        ({"a": "1"}, {"a": "0", "b": "2"}, {"a": "1", "b": "2"}),
        ({}, {"b": "2"}, {"b": "2"}),
    ],
)
def test_the_produced_bag_layers_without_copying(
    produced: Mapping[str, AttributeValue],
    request_values: dict[str, AttributeValue],
    expected: dict[str, str],
) -> None:
    from mixer.runtime._produced import ProducedBag

    origin = AttributeBag(request_values).tracking()
    origin.get("z")
    layered = ProducedBag(origin, produced)
    assert layered.to_dict() == expected
    assert sorted(layered) == sorted(expected)
    assert len(layered) == len(expected)
    assert all(name in layered for name in expected)
    # The producing phase's reads are kept.
    assert layered.referenced() == [AttributeMatch("z", ABSENCE)]


def test_a_field_is_verified_only_when_every_attribute_it_read_was_produced() -> None:
    manifest = ISTIO_MANIFEST
    fields = {
        "plan": compile_expression('request.auth.claims["plan"] | request.headers["x-plan"] | ""', manifest),
        "principal": compile_expression('request.auth.principal | source.principal | ""', manifest),
        "api": compile_expression('"catalog"', manifest),
    }
    sent = AttributeBag({"request.headers": {"x-plan": "enterprise"}, "source.principal": "spiffe://x"})

    def verified(
        produced: dict[str, AttributeValue], trusted: frozenset[str] = frozenset()
    ) -> dict[str, bool]:
        bag = ProducedBag(sent.tracking(), produced)
        instance = PlanCheckInstance("p", produced=frozenset(produced), sources=FieldSources(fields, bag))
        return {
            name: field_is_verified(instance, name, trusted) for name in ("plan", "principal", "api", "nope")
        }

    # A token with a plan claim and a subject: both fields stop at what the jwt handler produced.
    token: dict[str, AttributeValue] = {
        "request.auth.claims": {"plan": "pro"},
        "request.auth.principal": "iss/alice",
    }
    assert verified(token) == {"plan": True, "principal": True, "api": True, "nope": False}
    # A token without a plan claim: the fallback reads a header the caller sent.
    bare: dict[str, AttributeValue] = {
        "request.auth.claims": {"sub": "alice"},
        "request.auth.principal": "iss/alice",
    }
    assert verified(bare)["plan"] is False
    # No token: the caller's own attributes, unless the operator trusts them.
    assert verified({}) == {"plan": False, "principal": False, "api": True, "nope": False}
    trusted = frozenset(
        {"request.auth.claims", "request.headers", "request.auth.principal", "source.principal"}
    )
    assert verified({}, trusted)["plan"] is True
    assert verified({}, trusted)["principal"] is True
