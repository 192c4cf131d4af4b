"""Test adapters, instance builders and config helpers for the runtime tests."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from mixer.adapter import (
    AdapterInfo,
    CheckHandler,
    CheckResult,
    HandlerEnv,
    HandlerOverloaded,
    QuotaArgs,
    QuotaHandler,
    QuotaResult,
    ReportBatch,
    ReportHandler,
)
from mixer.attributes import ISTIO_MANIFEST, AttributeBag
from mixer.config import (
    DEFAULT_CONFIG_NAMESPACE,
    ActionConfig,
    HandlerConfig,
    HeaderOperationConfig,
    HeaderOperationKind,
    InstanceConfig,
    RuleConfig,
    SamplingConfig,
    SourceRef,
    ValidatedConfig,
)
from mixer.expr import CompiledExpression
from mixer.expr import compile as compile_expression
from mixer.registry import Registry
from mixer.status import Code, Status
from mixer.templates import BUILTIN_TEMPLATES, Instance, QuotaInstance, TemplateSpec

NS = DEFAULT_CONFIG_NAMESPACE
SOURCE = SourceRef("test.yaml", 1)
TEMPLATES = {spec.name: spec for spec in BUILTIN_TEMPLATES}


class Params(BaseModel):
    """What a test handler answers and how it misbehaves."""

    model_config = ConfigDict(extra="forbid")

    code: Code = Code.OK
    message: str = ""
    valid_seconds: float = 60.0
    valid_use_count: int = 10000
    headers: dict[str, str] = {}
    raise_message: str | None = None
    delay: float = 0.0
    grant_cap: int | None = None
    overloaded: bool = False
    fail_start: bool = False
    slow_shutdown: float = 0.0
    tag: str = ""


class RecordingHandler(CheckHandler, QuotaHandler, ReportHandler):
    """Implements every variety and records what it is given."""

    def __init__(self, params: BaseModel, env: HandlerEnv) -> None:
        assert isinstance(params, Params)
        self.params = params
        self.env = env
        self.checks: list[Instance] = []
        self.quotas: list[tuple[QuotaInstance, QuotaArgs]] = []
        self.batches: list[ReportBatch] = []
        self.starts = 0
        self.shutdowns = 0

    async def start(self) -> None:
        self.starts += 1
        if self.params.fail_start:
            raise RuntimeError("cannot connect")

    async def shutdown(self, timeout: float) -> None:
        self.shutdowns += 1
        if self.params.slow_shutdown:
            await asyncio.sleep(self.params.slow_shutdown)

    async def _misbehave(self) -> None:
        if self.params.delay:
            await asyncio.sleep(self.params.delay)
        if self.params.raise_message is not None:
            raise RuntimeError(self.params.raise_message)

    async def handle_check(self, instance: Instance) -> CheckResult:
        self.checks.append(instance)
        await self._misbehave()
        p = self.params
        return CheckResult(
            Status(p.code, p.message), timedelta(seconds=p.valid_seconds), p.valid_use_count, p.headers
        )

    async def handle_quota(self, instance: QuotaInstance, args: QuotaArgs) -> QuotaResult:
        self.quotas.append((instance, args))
        await self._misbehave()
        p = self.params
        granted = args.amount if p.grant_cap is None else min(args.amount, p.grant_cap)
        return QuotaResult(granted, timedelta(seconds=p.valid_seconds), Status(p.code, p.message))

    def handle_report(self, batch: ReportBatch) -> None:
        if self.params.overloaded:
            raise HandlerOverloaded(batch.handler)
        if self.params.raise_message is not None:
            raise RuntimeError(self.params.raise_message)
        self.batches.append(batch)


class ReportOnlyHandler(ReportHandler):
    def __init__(self, params: BaseModel, env: HandlerEnv) -> None:
        self.batches: list[ReportBatch] = []

    def handle_report(self, batch: ReportBatch) -> None:
        self.batches.append(batch)


class EmptyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _broken_factory(params: BaseModel, env: HandlerEnv) -> RecordingHandler:
    raise ValueError("bad credentials file")


ALL_TEMPLATES = frozenset(TEMPLATES)
TEST_ADAPTER = AdapterInfo("test", "test double", ALL_TEMPLATES, Params, RecordingHandler)
REPORT_ONLY_ADAPTER = AdapterInfo(
    "reportonly", "report only", frozenset({"metric", "listentry"}), EmptyParams, ReportOnlyHandler
)
BROKEN_ADAPTER = AdapterInfo("broken", "factory fails", ALL_TEMPLATES, EmptyParams, _broken_factory)
METRIC_ONLY_ADAPTER = AdapterInfo(
    "metriconly", "metric only", frozenset({"metric"}), Params, RecordingHandler
)


def registry() -> Registry:
    return Registry.build([TEST_ADAPTER, REPORT_ONLY_ADAPTER, BROKEN_ADAPTER, METRIC_ONLY_ADAPTER])


def expr(text: str) -> CompiledExpression:
    return compile_expression(text, ISTIO_MANIFEST)


@dataclass
class ExprBuilder:
    """Builds an instance from VALUE fields and MAP fields given as expression text."""

    name: str
    template: TemplateSpec
    values: Mapping[str, CompiledExpression] = field(default_factory=dict)
    maps: Mapping[str, Mapping[str, CompiledExpression]] = field(default_factory=dict)

    def build(self, bag: AttributeBag) -> Instance:
        kwargs: dict[str, Any] = {name: e.evaluate(bag) for name, e in self.values.items()}
        for name, entries in self.maps.items():
            kwargs[name] = {key: e.evaluate(bag) for key, e in entries.items()}
        return self.template.instance_type(self.name, **kwargs)


def fq(name: str, namespace: str = NS) -> str:
    return f"{name}.{namespace}"


def handler(name: str, adapter: str = "test", namespace: str = NS, **params: Any) -> HandlerConfig:
    model = next(info for info in registry().adapters.values() if info.name == adapter).config_model
    return HandlerConfig(fq(name, namespace), namespace, adapter, model(**params), SOURCE)


def instance(
    name: str, template: str, namespace: str = NS, **fields: str | Mapping[str, str]
) -> InstanceConfig:
    values = {k: expr(v) for k, v in fields.items() if isinstance(v, str)}
    maps = {k: {mk: expr(mv) for mk, mv in v.items()} for k, v in fields.items() if not isinstance(v, str)}
    spec = TEMPLATES[template]
    return InstanceConfig(
        fq(name, namespace), namespace, template, ExprBuilder(fq(name, namespace), spec, values, maps), SOURCE
    )


def header_op(
    name: str, *values: str, operation: HeaderOperationKind = HeaderOperationKind.REPLACE
) -> HeaderOperationConfig:
    return HeaderOperationConfig(name, tuple(expr(v) for v in values), operation)


def rule(
    name: str,
    match: str | None,
    *actions: tuple[str, Sequence[str]],
    namespace: str = NS,
    request_headers: Sequence[HeaderOperationConfig] = (),
    response_headers: Sequence[HeaderOperationConfig] = (),
    sampling: SamplingConfig | None = None,
) -> RuleConfig:
    return RuleConfig(
        fq(name, namespace),
        namespace,
        expr(match) if match else None,
        tuple(ActionConfig(h, tuple(insts)) for h, insts in actions),
        SOURCE,
        tuple(request_headers),
        tuple(response_headers),
        sampling,
    )


def config(
    handlers: Sequence[HandlerConfig], instances: Sequence[InstanceConfig], rules: Sequence[RuleConfig]
) -> ValidatedConfig:
    return ValidatedConfig(
        ISTIO_MANIFEST,
        {h.name: h for h in handlers},
        {i.name: i for i in instances},
        tuple(rules),
    )
