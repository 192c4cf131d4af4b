"""Check and quota dispatch: Mixer's combination rules and the referenced attributes."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from mixer.attributes import AttributeBag, AttributeMatch, AttributeValue, Condition
from mixer.config import HeaderOperationKind, ValidatedConfig
from mixer.runtime import (
    CheckOutcome,
    HeaderOperationResult,
    QuotaOutcome,
    QuotaRequest,
    Runtime,
    build_runtime,
)
from mixer.status import Code, Status
from mixer.templates import ListEntryInstance, QuotaInstance
from tests.runtime.support import (
    RecordingHandler,
    config,
    fq,
    handler,
    header_op,
    instance,
    registry,
    rule,
)

EXACT, ABSENCE = Condition.EXACT, Condition.ABSENCE


def runtime(cfg: ValidatedConfig) -> Runtime:
    return build_runtime(cfg, registry())


def recording(rt: Runtime, name: str) -> RecordingHandler:
    h = rt.handlers[fq(name)]
    assert isinstance(h, RecordingHandler)
    return h


def bag(**values: Any) -> AttributeBag:
    return AttributeBag({k.replace("__", "."): v for k, v in values.items()})


def two_checkers(a: dict[str, Any], b: dict[str, Any], *, match_b: str | None = None) -> ValidatedConfig:
    return config(
        [handler("a", **a), handler("b", **b)],
        [instance("who", "listentry", value='source.name | "x"')],
        [
            rule("ra", None, (fq("a"), [fq("who")])),
            rule("rb", match_b, (fq("b"), [fq("who")])),
        ],
    )


# -- precondition ---------------------------------------------------------------------------------


async def test_no_matching_rule_is_ok_for_a_minute_and_10000_uses() -> None:
    cfg = config(
        [handler("deny", code=Code.PERMISSION_DENIED)],
        [instance("nothing", "checknothing")],
        [rule("r", 'destination.service.name == "admin"', (fq("deny"), [fq("nothing")]))],
    )
    outcome = await runtime(cfg).check(bag(destination__service__name="web"))
    assert outcome.status == Status()
    assert outcome.valid_duration == timedelta(minutes=1)
    assert outcome.valid_use_count == 10000
    assert outcome.referenced == [AttributeMatch("destination.service.name", EXACT)]
    assert outcome.quotas == {}


async def test_empty_config_is_ok() -> None:
    outcome = await runtime(config([], [], [])).check(bag())
    assert outcome == CheckOutcome(Status(), timedelta(minutes=1), 10000)


async def test_one_denial() -> None:
    cfg = config(
        [
            handler(
                "deny",
                code=Code.PERMISSION_DENIED,
                message="not allowed",
                valid_seconds=5,
                valid_use_count=1000,
            )
        ],
        [instance("nothing", "checknothing")],
        [rule("r", None, (fq("deny"), [fq("nothing")]))],
    )
    rt = runtime(cfg)
    outcome = await rt.check(bag())
    assert outcome.status == Status(Code.PERMISSION_DENIED, "deny.istio-system:not allowed")
    assert outcome.valid_duration == timedelta(seconds=5)
    assert outcome.valid_use_count == 1000
    assert len(recording(rt, "deny").checks) == 1


async def test_first_failing_handler_in_rule_order_and_all_messages_joined() -> None:
    # The first rule's handler answers last: the order is the rules', not completion order.
    cfg = two_checkers(
        {"code": Code.UNAUTHENTICATED, "message": "who are you", "delay": 0.02},
        {"code": Code.PERMISSION_DENIED, "message": "go away"},
    )
    outcome = await runtime(cfg).check(bag(source__name="x"))
    assert outcome.status == Status(
        Code.UNAUTHENTICATED, "a.istio-system:who are you, b.istio-system:go away"
    )


async def test_an_ok_handler_does_not_hide_a_failing_one() -> None:
    cfg = two_checkers({}, {"code": Code.RESOURCE_EXHAUSTED, "message": "slow down"})
    outcome = await runtime(cfg).check(bag())
    assert outcome.status == Status(Code.RESOURCE_EXHAUSTED, "b.istio-system:slow down")


async def test_validity_is_the_minimum_over_handlers() -> None:
    cfg = two_checkers(
        {"valid_seconds": 30, "valid_use_count": 500}, {"valid_seconds": 10, "valid_use_count": 900}
    )
    outcome = await runtime(cfg).check(bag())
    assert outcome.status.ok
    assert outcome.valid_duration == timedelta(seconds=10)
    assert outcome.valid_use_count == 500


async def test_handlers_run_concurrently() -> None:
    cfg = two_checkers({"delay": 0.2}, {"delay": 0.2})
    rt = runtime(cfg)
    started = time.monotonic()
    await rt.check(bag())
    assert time.monotonic() - started < 0.35


async def test_handler_exception_is_internal_and_does_not_crash() -> None:
    cfg = two_checkers({"raise_message": "backend exploded"}, {"valid_seconds": 10})
    rt = runtime(cfg)
    outcome = await rt.check(bag())
    # The caller gets a generic reason; the exception's text is for the log.
    assert outcome.status == Status(Code.INTERNAL, "a.istio-system:handler failed, see the server log")
    # A failure the runtime made must not be cached by the proxy.
    assert outcome.valid_duration == timedelta(0)
    assert outcome.valid_use_count == 0
    assert rt.stats.handler_errors == {fq("a"): 1}


async def test_timeout_is_deadline_exceeded_for_the_late_handler_only() -> None:
    cfg = two_checkers({"delay": 5.0}, {"code": Code.PERMISSION_DENIED, "message": "no"})
    rt = runtime(cfg)
    outcome = await rt.check(bag(), timeout=0.05)
    assert outcome.status == Status(
        Code.DEADLINE_EXCEEDED, "a.istio-system:deadline exceeded, b.istio-system:no"
    )
    assert rt.stats.handler_timeouts == {fq("a"): 1}


async def test_timeout_with_a_single_handler() -> None:
    cfg = config(
        [handler("slow", delay=5.0)],
        [instance("nothing", "checknothing")],
        [rule("r", None, (fq("slow"), [fq("nothing")]))],
    )
    outcome = await runtime(cfg).check(bag(), timeout=0.01)
    assert outcome.status.code is Code.DEADLINE_EXCEEDED


async def test_match_error_counts_as_false() -> None:
    cfg = config(
        [handler("deny", code=Code.PERMISSION_DENIED)],
        [instance("nothing", "checknothing")],
        [rule("r", 'request.headers["x-token"] == "bad"', (fq("deny"), [fq("nothing")]))],
    )
    rt = runtime(cfg)
    outcome = await rt.check(bag())
    assert outcome.status.ok
    assert rt.stats.match_errors == 1
    # The decision still depended on the header being absent.
    assert outcome.referenced == [AttributeMatch("request.headers", ABSENCE)]


async def test_instance_build_error_fails_the_check_naming_the_instance() -> None:
    cfg = config(
        [handler("list")],
        [instance("user", "listentry", value='request.headers["x-user"]')],
        [rule("r", None, (fq("list"), [fq("user")]))],
    )
    rt = runtime(cfg)
    outcome = await rt.check(bag(request__headers={"other": "1"}))
    assert outcome.status.code is Code.INTERNAL
    assert outcome.status.message.startswith("list.istio-system:instance user.istio-system: ")
    assert "x-user" in outcome.status.message
    assert outcome.valid_use_count == 0
    assert rt.stats.instance_errors == 1
    assert recording(rt, "list").checks == []


async def test_the_handler_receives_the_built_instance() -> None:
    cfg = config(
        [handler("list")],
        [instance("user", "listentry", value='request.headers["x-user"] | "anon"')],
        [rule("r", None, (fq("list"), [fq("user")]))],
    )
    rt = runtime(cfg)
    await rt.check(bag(request__headers={"x-user": "alice"}))
    assert recording(rt, "list").checks == [ListEntryInstance(fq("user"), value="alice")]


# -- referenced attributes ------------------------------------------------------------------------


def referenced_config() -> ValidatedConfig:
    return config(
        [handler("list"), handler("other")],
        [
            instance("user", "listentry", value='request.headers["x-user"] | "anon"'),
            instance("path", "listentry", value="request.path"),
        ],
        [
            rule("web", 'destination.service.name == "web"', (fq("list"), [fq("user")])),
            # Never matches: its instance must not be read.
            rule("never", 'source.name == "nobody"', (fq("other"), [fq("path")])),
        ],
    )


async def test_referenced_lists_exactly_what_the_decision_read() -> None:
    rt = build_runtime(
        config(
            [handler("list")],
            [instance("user", "listentry", value='request.headers["x-user"] | "anon"')],
            [rule("web", 'destination.service.name == "web"', (fq("list"), [fq("user")]))],
        ),
        registry(),
    )
    attributes = bag(
        destination__service__name="web",
        destination__namespace="default",
        source__name="client",
        request__path="/",
        request__headers={"x-user": "alice", "accept": "*/*"},
    )
    outcome = await rt.check(attributes)
    assert outcome.referenced == [
        AttributeMatch("destination.service.name", EXACT),
        AttributeMatch("request.headers", EXACT, "x-user"),
    ]


async def test_referenced_absent_map_key_and_unmatched_rules() -> None:
    rt = runtime(referenced_config())
    outcome = await rt.check(
        bag(destination__service__name="web", source__name="client", request__path="/", request__headers={})
    )
    assert outcome.referenced == [
        AttributeMatch("destination.service.name", EXACT),
        AttributeMatch("request.headers", ABSENCE, "x-user"),
        AttributeMatch("source.name", EXACT),
    ]


async def test_referenced_when_the_rule_does_not_match() -> None:
    rt = runtime(referenced_config())
    outcome = await rt.check(bag(destination__service__name="api", request__headers={"x-user": "a"}))
    assert outcome.referenced == [
        AttributeMatch("destination.service.name", EXACT),
        AttributeMatch("source.name", ABSENCE),
    ]


# -- quotas ---------------------------------------------------------------------------------------


def quota_config(*, deny: bool = False, **quota_params: Any) -> ValidatedConfig:
    handlers = [handler("mq", **quota_params)]
    instances = [instance("requestcount", "quota", dimensions={"user": 'request.headers["x-user"] | "anon"'})]
    rules = [rule("quota", 'source.namespace == "shop"', (fq("mq"), [fq("requestcount")]))]
    if deny:
        handlers.append(handler("deny", code=Code.PERMISSION_DENIED, message="no"))
        instances.append(instance("nothing", "checknothing"))
        rules.append(rule("deny", None, (fq("deny"), [fq("nothing")])))
    return config(handlers, instances, rules)


SHOP: dict[str, AttributeValue] = {
    "source.namespace": "shop",
    "request.headers": {"x-user": "alice"},
    "request.path": "/",
}


async def test_quota_reaches_the_handler_with_dedup_id_and_best_effort() -> None:
    rt = runtime(quota_config(grant_cap=3, valid_seconds=7))
    outcome = await rt.check(
        AttributeBag(SHOP), {"requestcount": QuotaRequest(5, best_effort=True)}, "dedup-1"
    )
    assert outcome.quotas == {
        "requestcount": QuotaOutcome(
            3,
            timedelta(seconds=7),
            Status(),
            [AttributeMatch("request.headers", EXACT, "x-user"), AttributeMatch("source.namespace", EXACT)],
        )
    }
    (quota_instance, args), *rest = recording(rt, "mq").quotas
    assert rest == []
    assert quota_instance == QuotaInstance(fq("requestcount"), dimensions={"user": "alice"})
    assert args.deduplication_id == "dedup-1requestcount"
    assert args.amount == 5
    assert args.best_effort is True
    # The precondition read nothing: no check rule.
    assert outcome.referenced == []


async def test_quota_names_accepted() -> None:
    rt = runtime(quota_config(grant_cap=1))
    names = ["requestcount", "requestcount.istio-system", "requestcount.quota.istio-system", "RequestCount"]
    outcome = await rt.check(AttributeBag(SHOP), {n: QuotaRequest(2) for n in names}, "d")
    assert {n: q.granted_amount for n, q in outcome.quotas.items()} == dict.fromkeys(names, 1)
    assert sorted(a.deduplication_id for _, a in recording(rt, "mq").quotas) == sorted("d" + n for n in names)


async def test_legacy_quota_instance_names() -> None:
    cfg = config(
        [handler("mq", grant_cap=1)],
        [instance("requestcount.quota", "quota")],
        [rule("quota", None, (fq("mq"), [fq("requestcount.quota")]))],
    )
    rt = runtime(cfg)
    names = ["requestcount", "requestcount.quota.istio-system", "requestcount.istio-system"]
    outcome = await rt.check(bag(), {n: QuotaRequest(2) for n in names})
    assert {n: q.granted_amount for n, q in outcome.quotas.items()} == dict.fromkeys(names, 1)


async def test_quotas_skipped_when_the_precondition_fails() -> None:
    rt = runtime(quota_config(deny=True))
    outcome = await rt.check(AttributeBag(SHOP), {"requestcount": QuotaRequest(1)})
    assert outcome.status.code is Code.PERMISSION_DENIED
    assert outcome.quotas == {}
    assert recording(rt, "mq").quotas == []


async def test_unconfigured_quota_is_granted_for_a_minute() -> None:
    rt = runtime(quota_config())
    outcome = await rt.check(AttributeBag(SHOP), {"bandwidth": QuotaRequest(250)})
    assert outcome.quotas == {"bandwidth": QuotaOutcome(250, timedelta(minutes=1), Status(), [])}


async def test_configured_quota_whose_rule_does_not_match_is_granted() -> None:
    rt = runtime(quota_config(grant_cap=0))
    outcome = await rt.check(bag(source__namespace="other"), {"requestcount": QuotaRequest(4)})
    assert outcome.quotas["requestcount"] == QuotaOutcome(
        4, timedelta(minutes=1), Status(), [AttributeMatch("source.namespace", EXACT)]
    )


async def test_several_quota_handlers_grant_the_minimum() -> None:
    cfg = config(
        [handler("a", grant_cap=8, valid_seconds=30), handler("b", grant_cap=2, valid_seconds=60)],
        [instance("rc", "quota")],
        [rule("ra", None, (fq("a"), [fq("rc")])), rule("rb", None, (fq("b"), [fq("rc")]))],
    )
    outcome = await runtime(cfg).check(bag(), {"rc": QuotaRequest(10)})
    assert outcome.quotas["rc"] == QuotaOutcome(2, timedelta(seconds=30), Status(), [])


async def test_quota_handler_failure_grants_nothing() -> None:
    rt = runtime(quota_config(raise_message="redis down"))
    outcome = await rt.check(AttributeBag(SHOP), {"requestcount": QuotaRequest(1)})
    result = outcome.quotas["requestcount"]
    assert result.granted_amount == 0
    assert result.status == Status(Code.INTERNAL, "mq.istio-system:handler failed, see the server log")
    assert outcome.status.ok


async def test_quota_timeout() -> None:
    rt = runtime(quota_config(delay=5.0))
    outcome = await rt.check(AttributeBag(SHOP), {"requestcount": QuotaRequest(1)}, timeout=0.02)
    assert outcome.quotas["requestcount"].status.code is Code.DEADLINE_EXCEEDED
    assert outcome.quotas["requestcount"].granted_amount == 0


async def test_quota_and_precondition_reference_separately() -> None:
    cfg = quota_config()
    cfg = config(
        [*cfg.handlers.values(), handler("list")],
        [*cfg.instances.values(), instance("p", "listentry", value="request.path")],
        [*cfg.rules, rule("paths", None, (fq("list"), [fq("p")]))],
    )
    outcome = await runtime(cfg).check(AttributeBag(SHOP), {"requestcount": QuotaRequest(1)})
    assert outcome.referenced == [AttributeMatch("request.path", EXACT)]
    assert outcome.quotas["requestcount"].referenced == [
        AttributeMatch("request.headers", EXACT, "x-user"),
        AttributeMatch("source.namespace", EXACT),
    ]


# -- namespaces -----------------------------------------------------------------------------------


def namespaced_config() -> ValidatedConfig:
    return config(
        [handler("deny", code=Code.PERMISSION_DENIED, message="shop only"), handler("audit")],
        [instance("nothing", "checknothing")],
        [
            rule("global", None, (fq("audit"), [fq("nothing")])),
            rule("shop", None, (fq("deny", "istio-system"), [fq("nothing")]), namespace="shop"),
        ],
    )


async def test_namespaced_rules_apply_only_to_their_identity_namespace() -> None:
    rt = runtime(namespaced_config())
    denied = await rt.check(bag(destination__namespace="shop"))
    assert denied.status.code is Code.PERMISSION_DENIED
    assert denied.referenced == [
        AttributeMatch("context.reporter.kind", ABSENCE),
        AttributeMatch("destination.namespace", EXACT),
    ]

    elsewhere = await rt.check(bag(destination__namespace="default"))
    assert elsewhere.status.ok
    assert len(recording(rt, "audit").checks) == 2


async def test_identity_namespace_falls_back_to_the_service_namespace() -> None:
    rt = runtime(namespaced_config())
    outcome = await rt.check(bag(destination__service__namespace="shop"))
    assert outcome.status.code is Code.PERMISSION_DENIED
    assert outcome.referenced == [
        AttributeMatch("context.reporter.kind", ABSENCE),
        AttributeMatch("destination.namespace", ABSENCE),
        AttributeMatch("destination.service.namespace", EXACT),
    ]
    outcome = await rt.check(bag())
    assert outcome.status.ok


async def test_outbound_reports_take_the_identity_namespace_from_the_source() -> None:
    # Mixer's dispatcher: a client-side (outbound) report belongs to the client's namespace.
    rt = runtime(namespaced_config())
    outbound = await rt.check(
        bag(context__reporter__kind="outbound", source__namespace="shop", destination__namespace="default")
    )
    assert outbound.status.code is Code.PERMISSION_DENIED
    assert outbound.referenced == [
        AttributeMatch("context.reporter.kind", EXACT),
        AttributeMatch("source.namespace", EXACT),
    ]
    inbound = await rt.check(
        bag(context__reporter__kind="inbound", source__namespace="shop", destination__namespace="default")
    )
    assert inbound.status.ok
    other = await rt.check(bag(context__reporter__kind="gateway", destination__namespace="shop"))
    assert other.status.ok


async def test_identity_namespace_not_read_without_namespaced_rules() -> None:
    cfg = config(
        [handler("audit")],
        [instance("nothing", "checknothing")],
        [rule("global", None, (fq("audit"), [fq("nothing")]))],
    )
    outcome = await runtime(cfg).check(bag(destination__namespace="shop"))
    assert outcome.referenced == []


# -- route directive ------------------------------------------------------------------------------


async def test_header_operations_of_matched_rules_and_handler_headers() -> None:
    cfg = config(
        [handler("plans", headers={"x-plan": "pro"})],
        [instance("key", "listentry", value='request.headers["x-api-key"] | ""')],
        [
            rule(
                "plans",
                None,
                (fq("plans"), [fq("key")]),
                request_headers=[
                    header_op("x-user", 'request.headers["x-user"] | "anon"'),
                    header_op("x-tag", '"a"', '"b"', operation=HeaderOperationKind.APPEND),
                    header_op("x-internal", operation=HeaderOperationKind.REMOVE),
                ],
                response_headers=[header_op("x-served-by", '"mixer"')],
            ),
            rule("never", "false", request_headers=[header_op("x-never", '"1"')]),
        ],
    )
    outcome = await runtime(cfg).check(bag(request__headers={"x-user": "bob"}))
    assert outcome.headers == {"x-plan": "pro"}
    assert outcome.request_header_operations == [
        HeaderOperationResult("x-plan", "pro", HeaderOperationKind.REPLACE),
        HeaderOperationResult("x-user", "bob", HeaderOperationKind.REPLACE),
        HeaderOperationResult("x-tag", "a", HeaderOperationKind.APPEND),
        HeaderOperationResult("x-tag", "b", HeaderOperationKind.APPEND),
        HeaderOperationResult("x-internal", "", HeaderOperationKind.REMOVE),
    ]
    assert outcome.response_header_operations == [HeaderOperationResult("x-served-by", "mixer")]
    assert outcome.referenced == [
        AttributeMatch("request.headers", ABSENCE, "x-api-key"),
        AttributeMatch("request.headers", EXACT, "x-user"),
    ]


async def test_handler_headers_dropped_when_denied() -> None:
    cfg = two_checkers({"headers": {"x-plan": "free"}}, {"code": Code.PERMISSION_DENIED})
    outcome = await runtime(cfg).check(bag())
    assert outcome.headers == {}
    assert outcome.request_header_operations == []
    assert outcome.status == Status(Code.PERMISSION_DENIED, "b.istio-system:")


async def test_header_value_error_leaves_the_operation_out() -> None:
    cfg = config(
        [],
        [],
        [
            rule(
                "h",
                None,
                request_headers=[header_op("x-user", 'request.headers["x-user"]'), header_op("x-a", '"1"')],
            )
        ],
    )
    rt = runtime(cfg)
    outcome = await rt.check(bag())
    assert outcome.request_header_operations == [HeaderOperationResult("x-a", "1")]
    assert rt.stats.header_errors == 1


async def test_stats_count_calls() -> None:
    rt = runtime(quota_config())
    await rt.check(AttributeBag(SHOP), {"requestcount": QuotaRequest(1), "other": QuotaRequest(1)})
    await rt.check(AttributeBag(SHOP))
    assert rt.stats.check_calls == 2
    assert rt.stats.quota_calls == 2
