"""The noop handler: accepts everything and counts what it was given."""

from __future__ import annotations

from mixer import (
    CheckHandler,
    CheckResult,
    QuotaArgs,
    QuotaHandler,
    QuotaResult,
    ReportBatch,
    ReportHandler,
)
from mixer.templates import Instance, QuotaInstance

_OK = CheckResult()


class NoopHandler(CheckHandler, QuotaHandler, ReportHandler):
    """Checks answer OK, quotas grant the full amount, reports are discarded."""

    def __init__(self) -> None:
        #: Instances seen, per variety: cheap enough to leave on in benchmarks.
        self.checks = 0
        self.quotas = 0
        self.reports = 0

    async def handle_check(self, instance: Instance) -> CheckResult:
        self.checks += 1
        return _OK

    async def handle_quota(self, instance: QuotaInstance, args: QuotaArgs) -> QuotaResult:
        self.quotas += 1
        return QuotaResult(granted_amount=args.amount)

    def handle_report(self, batch: ReportBatch) -> None:
        self.reports += len(batch.instances)
