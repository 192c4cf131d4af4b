"""The denier's handler: one fixed answer, computed once from the config."""

from __future__ import annotations

from datetime import timedelta

from adapters.denier._config import DenierConfig
from mixer import CheckHandler, CheckResult, QuotaArgs, QuotaHandler, QuotaResult, Status
from mixer.templates import Instance, QuotaInstance


class DenierHandler(CheckHandler, QuotaHandler):
    """Answers every check with the configured status and grants no quota."""

    def __init__(self, config: DenierConfig) -> None:
        self.check_result = CheckResult(
            status=Status(config.status.code, config.status.message),
            valid_duration=config.valid_duration,
            valid_use_count=config.valid_use_count,
        )
        # As Mixer's denier: an empty answer (OK status, nothing granted, valid for no time), which
        # the runtime turns into RESOURCE_EXHAUSTED for a caller that asked for an amount.
        self.quota_result = QuotaResult(granted_amount=0, valid_duration=timedelta(0))

    async def handle_check(self, instance: Instance) -> CheckResult:
        return self.check_result

    async def handle_quota(self, instance: QuotaInstance, args: QuotaArgs) -> QuotaResult:
        return self.quota_result
