"""The noop adapter: everything passes, everything is granted, reports are counted and dropped."""

from __future__ import annotations

import logging
from pathlib import Path

from adapters.noop import ADAPTER, NoopConfig
from adapters.noop._handler import NoopHandler
from mixer import Code, HandlerEnv, QuotaArgs, ReportBatch
from mixer.templates import BUILTIN_TEMPLATES, CheckNothingInstance, MetricInstance, QuotaInstance


async def test_accepts_everything(tmp_path: Path) -> None:
    handler = ADAPTER.factory(NoopConfig(), HandlerEnv("noop.test", logging.getLogger("test"), tmp_path))
    assert isinstance(handler, NoopHandler)
    assert (await handler.handle_check(CheckNothingInstance("c"))).status.code is Code.OK
    quota = await handler.handle_quota(QuotaInstance("q"), QuotaArgs("d", 42))
    assert quota.granted_amount == 42
    handler.handle_report(ReportBatch("noop.test", [MetricInstance("m"), MetricInstance("m")]))
    assert (handler.checks, handler.quotas, handler.reports) == (1, 1, 2)


def test_supports_every_builtin_template() -> None:
    assert {spec.name for spec in BUILTIN_TEMPLATES} == ADAPTER.templates
