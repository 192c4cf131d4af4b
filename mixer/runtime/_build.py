"""Turning a validated configuration into a runtime: handlers built (or reused), rules indexed."""

from __future__ import annotations

import hashlib
import itertools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mixer.adapter import (
    AdapterInfo,
    AttributeHandler,
    CheckHandler,
    DeliveryAck,
    Handler,
    HandlerEnv,
    QuotaHandler,
    ReportHandler,
)
from mixer.attributes import AttributeBag
from mixer.config import (
    CompiledInstanceBuilder,
    HeaderOperationConfig,
    InstanceConfig,
    RuleConfig,
    ValidatedConfig,
)
from mixer.expr import CompiledExpression
from mixer.registry import Registry
from mixer.runtime._check_cache import CheckCache
from mixer.runtime._generate import GenerateAction, GenerateRule
from mixer.runtime._index import (
    CheckAction,
    CheckRule,
    HeaderOp,
    QuotaAction,
    QuotaRule,
    ReportAction,
    ReportRule,
    Scoped,
    make_sampler,
)
from mixer.runtime._outcomes import RuntimeBuildError, RuntimeDelta, RuntimeStats
from mixer.runtime._runtime import HandlerSlot, Runtime
from mixer.templates import Instance, Variety

_generations = itertools.count(1)

_INTERFACES: dict[Variety, type[Handler]] = {
    Variety.CHECK: CheckHandler,
    Variety.QUOTA: QuotaHandler,
    Variety.REPORT: ReportHandler,
    Variety.ATTRIBUTE_GENERATOR: AttributeHandler,
}


@dataclass(frozen=True, slots=True)
class _Target:
    """One (handler, instance) pair of a rule action, resolved."""

    handler: str
    instance: InstanceConfig
    variety: Variety
    request_context: bool = False
    output_prefix: str = ""


def build_runtime(
    config: ValidatedConfig,
    registry: Registry,
    *,
    previous: Runtime | None = None,
    data_dir: Path | None = None,
    delivery_ack: DeliveryAck = "auto",
    logger: logging.Logger | None = None,
    rng: Callable[[], float] | None = None,
    clock: Callable[[], float] | None = None,
    check_cache_bytes: int | None = None,
) -> Runtime:
    """Build a runtime snapshot from ``config``; nothing is started (see :meth:`Runtime.start`).

    Only handlers some rule sends instances to are built. A handler whose name, adapter and params
    equal one of ``previous`` (and ``previous`` is not shut down) is reused as is: its connections
    and queues survive the reload. The name takes part because a handler's environment (logger,
    data directory, metric labels) derives from it. ``runtime.delta`` tells which handlers are new,
    reused and retired. Statistics carry over from ``previous``.

    ``data_dir``: each handler gets ``data_dir / <handler name>`` as its own place for files (not
    created here). ``delivery_ack`` is the acknowledgement mode of report handlers whose config
    sets none (``HandlerEnv.delivery_ack``). ``rng`` draws in [0, 1) for random rule sampling and
    ``clock`` (seconds) times rate-limit sampling windows and the validity of cached Check
    answers; tests inject both.

    ``check_cache_bytes`` bounds the cache of precondition answers (0 turns it off; see
    :mod:`mixer.runtime._check_cache`). The cache is shared with ``previous``, so None keeps
    the size ``previous`` had (off when there is none).

    :raises RuntimeBuildError: a rule names a missing handler or instance, an adapter is unknown or
        lacks the interface or template a rule needs, or a factory fails.
    """
    log = logger if logger is not None else logging.getLogger("mixer.runtime")
    draw = rng if rng is not None else random.random
    now = clock if clock is not None else time.monotonic
    default_namespace = config.default_namespace

    resolved: list[tuple[RuleConfig, list[_Target]]] = []
    used: dict[str, None] = {}
    for rule in config.rules:
        targets: list[_Target] = []
        for action in rule.actions:
            if action.handler not in config.handlers:
                raise RuntimeBuildError(
                    f"rule {rule.name} ({rule.source}): unknown handler {action.handler!r}"
                )
            used[action.handler] = None
            for instance_name in action.instances:
                instance = config.instances.get(instance_name)
                if instance is None:
                    raise RuntimeBuildError(
                        f"rule {rule.name} ({rule.source}): unknown instance {instance_name!r}"
                    )
                spec = registry.template(instance.template) or instance.builder.template
                prefix = f"{action.name}.output." if action.name and instance.builder.template.outputs else ""
                targets.append(_Target(action.handler, instance, spec.variety, spec.request_context, prefix))
        resolved.append((rule, targets))

    stats = previous.stats if previous is not None else RuntimeStats()
    if previous is not None:
        check_cache = previous.check_cache
        if check_cache_bytes is not None and check_cache_bytes != check_cache.max_bytes:
            check_cache.resize(check_cache_bytes)
    else:
        check_cache = CheckCache(check_cache_bytes or 0, stats, now)
    slots, delta = _build_handlers(
        config, registry, list(used), previous, data_dir, delivery_ack, log, check_cache.clear
    )
    handlers = {slot.name: slot.handler for slot in slots}

    for rule, targets in resolved:
        for target in targets:
            _check_interface(config, registry, rule, target, handlers[target.handler])

    report_handler_index: dict[str, int] = {}
    report_handlers: list[tuple[str, ReportHandler]] = []
    check_rules: list[tuple[str | None, CheckRule]] = []
    produce_rules: list[tuple[str | None, CheckRule]] = []
    quota_rules: dict[str, list[tuple[str | None, QuotaRule]]] = {}
    report_rules: list[tuple[str | None, ReportRule]] = []
    generate_rules: list[tuple[str | None, GenerateRule]] = []
    # One builder per report instance, shared by every action that sends it to a handler.
    report_builds: dict[str, _BuiltOncePerBag] = {}

    for rule, targets in resolved:
        namespace = None if rule.namespace == default_namespace else rule.namespace
        # One generated function per match (same values and errors as `evaluate`).
        match = rule.match.generated() if rule.match is not None else None

        generating = tuple(
            GenerateAction(
                t.handler,
                _as_attribute(handlers[t.handler]),
                t.instance.name,
                t.instance.builder.build,
                tuple((attribute, expression.evaluate) for attribute, expression in t.instance.bindings),
            )
            for t in targets
            if t.variety is Variety.ATTRIBUTE_GENERATOR
        )
        if generating:
            generate_rules.append((namespace, GenerateRule(rule.name, match, generating)))

        check_targets = [t for t in targets if t.variety is Variety.CHECK]
        # Actions to attribute-producing handlers run in a first phase of their own; the rule's
        # other actions and its header operations see what they produced.
        producing = tuple(
            _check_action(t, handlers) for t in check_targets if _produces(config, registry, t.handler)
        )
        if producing:
            produce_rules.append((namespace, CheckRule(rule.name, match, producing)))
        check_actions = tuple(
            _check_action(t, handlers) for t in check_targets if not _produces(config, registry, t.handler)
        )
        request_headers = tuple(_header_op(op) for op in rule.request_header_operations)
        response_headers = tuple(_header_op(op) for op in rule.response_header_operations)
        if check_actions or request_headers or response_headers:
            deferred = any(a.output_prefix for a in check_actions)
            check_rules.append(
                (
                    namespace,
                    CheckRule(rule.name, match, check_actions, request_headers, response_headers, deferred),
                )
            )

        by_alias: dict[str, list[QuotaAction]] = {}
        for t in targets:
            if t.variety is not Variety.QUOTA:
                continue
            quota_action = QuotaAction(
                t.handler, _as_quota(handlers[t.handler]), t.instance.name, t.instance.builder.build
            )
            for alias in _quota_aliases(t.instance):
                by_alias.setdefault(alias, []).append(quota_action)
        for alias, actions in by_alias.items():
            quota_rules.setdefault(alias, []).append((namespace, QuotaRule(rule.name, match, tuple(actions))))

        report_actions: list[ReportAction] = []
        for t in targets:
            if t.variety is not Variety.REPORT:
                continue
            index = report_handler_index.get(t.handler)
            if index is None:
                index = report_handler_index[t.handler] = len(report_handlers)
                report_handlers.append((t.handler, _as_report(handlers[t.handler])))
            build = report_builds.get(t.instance.name)
            if build is None:
                build = report_builds[t.instance.name] = _BuiltOncePerBag(t.instance.builder.build)
            report_actions.append((index, build, t.instance.name))
        if report_actions:
            sampler = make_sampler(rule.sampling, draw, now)
            report_rules.append((namespace, (match, sampler, tuple(report_actions), rule.name)))

    runtime = Runtime(
        config=config,
        generation=next(_generations),
        slots=slots,
        check=Scoped.of(check_rules),
        produce=Scoped.of(produce_rules),
        generate=Scoped.of(generate_rules),
        quota={alias: Scoped.of(rules) for alias, rules in quota_rules.items()},
        report=Scoped.of(report_rules),
        report_handlers=report_handlers,
        stats=stats,
        delta=delta,
        logger=log,
        check_cache=check_cache,
    )
    fresh = set(delta.new)
    for slot in slots:
        if slot.name in fresh:
            slot.owner = runtime
    return runtime


def _build_handlers(
    config: ValidatedConfig,
    registry: Registry,
    names: list[str],
    previous: Runtime | None,
    data_dir: Path | None,
    delivery_ack: DeliveryAck,
    log: logging.Logger,
    answers_changed: Callable[[], None],
) -> tuple[list[HandlerSlot], RuntimeDelta]:
    reusable = [] if previous is None or previous.closed else [s for s in previous._slots if not s.stopped]
    slots: list[HandlerSlot] = []
    new: list[str] = []
    reused: list[str] = []
    plans = _plans_fingerprint(config)
    for name in names:
        handler_config = config.handlers[name]
        handler_dir = data_dir / name if data_dir is not None else None
        info = _adapter_info(config, registry, handler_config.adapter)
        # Handlers that read plans are as stale as their plans: the plans take part in reuse.
        fingerprint = plans if info is not None and info.uses_plans else ""
        slot = next(
            (
                s
                for s in reusable
                if s.same_config(name, handler_config.adapter, handler_config.params, handler_dir)
                and s.plans_fingerprint == fingerprint
            ),
            None,
        )
        if slot is not None:
            slots.append(slot)
            reused.append(name)
            continue
        if info is None:
            raise RuntimeBuildError(
                f"handler {name} ({handler_config.source}): unknown adapter {handler_config.adapter!r}"
            )
        replaced = next(
            (s.handler for s in reusable if s.name == name and s.adapter == handler_config.adapter), None
        )
        env = HandlerEnv(
            handler_name=name,
            logger=log.getChild(name),
            data_dir=handler_dir,
            plans=config.plans,
            key_stores=registry.key_stores,
            previous=replaced,
            delivery_ack=delivery_ack,
            answers_changed=answers_changed,
        )
        try:
            handler = info.build(handler_config.params, env)
        except Exception as exc:
            raise RuntimeBuildError(
                f"handler {name} ({handler_config.source}): adapter {info.name!r} failed to build it: {exc}"
            ) from exc
        if not isinstance(handler, Handler):
            raise RuntimeBuildError(
                f"handler {name}: adapter {info.name!r} built a {type(handler).__name__}, not a Handler"
            )
        slots.append(
            HandlerSlot(
                name,
                handler_config.adapter,
                handler_config.params,
                handler_dir,
                handler,
                plans_fingerprint=fingerprint,
            )
        )
        new.append(name)
    kept = {id(s) for s in slots}
    retired = [] if previous is None else [s.name for s in previous._slots if id(s) not in kept]
    return slots, RuntimeDelta(tuple(new), tuple(reused), tuple(retired))


def _plans_fingerprint(config: ValidatedConfig) -> str:
    digest = hashlib.sha256()
    for name in sorted(config.plans):
        digest.update(f"{name}\0{config.plans[name].fingerprint}\0".encode())
    return digest.hexdigest()


def _check_interface(
    config: ValidatedConfig, registry: Registry, rule: RuleConfig, target: _Target, handler: Handler
) -> None:
    handler_config = config.handlers[target.handler]
    needed = _INTERFACES[target.variety]
    if not isinstance(handler, needed):
        raise RuntimeBuildError(
            f"rule {rule.name} ({rule.source}): handler {target.handler} "
            f"(adapter {handler_config.adapter!r}) cannot take {target.variety.value} instance "
            f"{target.instance.name} of template {target.instance.template!r}: "
            f"it does not implement {needed.__name__}"
        )
    info = _adapter_info(config, registry, handler_config.adapter)
    if info is not None and target.instance.template not in info.templates:
        supported = ", ".join(sorted(info.templates)) or "none"
        raise RuntimeBuildError(
            f"rule {rule.name} ({rule.source}): handler {target.handler} (adapter {info.name!r}) does not "
            f"support template {target.instance.template!r} of instance {target.instance.name} "
            f"(supported: {supported})"
        )


def _check_action(target: _Target, handlers: dict[str, Handler]) -> CheckAction:
    builder = target.instance.builder
    fields: dict[str, CompiledExpression] = {}
    if target.request_context and isinstance(builder, CompiledInstanceBuilder):
        # A plan handler trusts a field only when every attribute it read was verified.
        fields = {
            name: expression
            for name, expression in builder.expressions.items()
            if isinstance(expression, CompiledExpression)
        }
    return CheckAction(
        target.handler,
        _as_check(handlers[target.handler]),
        target.instance.name,
        builder.build,
        target.request_context,
        target.output_prefix,
        fields,
    )


def _adapter_info(config: ValidatedConfig, registry: Registry, name: str) -> AdapterInfo | None:
    """An installed adapter, or one the configuration declared (out-of-process adapters)."""
    return registry.adapter(name) or config.oop_adapters.get(name)


def _produces(config: ValidatedConfig, registry: Registry, handler: str) -> bool:
    info = _adapter_info(config, registry, config.handlers[handler].adapter)
    return info is not None and info.produces_attributes


class _BuiltOncePerBag:
    """Builds an instance once per bag however many handlers receive it.

    The stock access log goes to several handlers (stdio, Kafka, Elasticsearch); each of their
    actions would otherwise evaluate its two dozen expressions again. Report builds a request's
    instances one after another, so the last bag and its instance are enough (a strong reference:
    the bag's identity cannot be reused meanwhile). Handlers treat instances as read-only. A build
    that raises is not cached: the next action raises and counts the error again, as before.
    """

    __slots__ = ("_bag", "_build", "_instance")

    def __init__(self, build: Callable[[AttributeBag], Instance]) -> None:
        self._build = build
        self._bag: AttributeBag | None = None
        self._instance: Instance | None = None

    def __call__(self, bag: AttributeBag) -> Instance:
        instance = self._instance
        if bag is self._bag and instance is not None:
            return instance
        instance = self._build(bag)
        self._bag = bag
        self._instance = instance
        return instance


def _as_quota(handler: Handler) -> QuotaHandler:
    assert isinstance(handler, QuotaHandler)
    return handler


def _as_report(handler: Handler) -> ReportHandler:
    assert isinstance(handler, ReportHandler)
    return handler


def _as_attribute(handler: Handler) -> AttributeHandler:
    assert isinstance(handler, AttributeHandler)
    return handler


def _as_check(handler: Handler) -> CheckHandler:
    assert isinstance(handler, CheckHandler)
    return handler


def _header_op(op: HeaderOperationConfig) -> HeaderOp:
    return HeaderOp(op.name, tuple(value.evaluate for value in op.values), op.operation)


def _quota_aliases(instance: InstanceConfig) -> tuple[str, ...]:
    """The names a Check may ask for this quota instance by, lowercased (Mixer compared them
    case-insensitively): ``name.namespace``, ``name`` and the legacy ``name.quota.namespace``,
    whichever of the two forms the instance was configured in."""
    fq = instance.name
    suffix = "." + instance.namespace
    base = fq[: -len(suffix)] if instance.namespace and fq.endswith(suffix) else fq
    legacy_kind = "." + instance.template
    short = base[: -len(legacy_kind)] if base.endswith(legacy_kind) else base
    names = (fq, short, f"{short}.{instance.namespace}", f"{short}{legacy_kind}.{instance.namespace}")
    return tuple(dict.fromkeys(name.lower() for name in names))
