"""The denier adapter: one configured status for every check, nothing granted for quotas."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from adapters.denier import ADAPTER, DenierConfig
from mixer import CheckHandler, Code, HandlerEnv, QuotaArgs, QuotaHandler
from mixer.templates import CheckNothingInstance, ListEntryInstance, QuotaInstance


def _handler(params: dict[str, object], tmp_path: Path) -> CheckHandler:
    handler = ADAPTER.factory(
        DenierConfig.model_validate(params),
        HandlerEnv("deny.istio-system", logging.getLogger("test"), tmp_path),
    )
    assert isinstance(handler, CheckHandler)
    return handler


async def test_defaults_are_mixers(tmp_path: Path) -> None:
    result = await _handler({}, tmp_path).handle_check(CheckNothingInstance("denyall.istio-system"))
    assert result.status.code is Code.FAILED_PRECONDITION
    assert result.status.message == ""
    assert result.valid_duration == timedelta(seconds=5)
    assert result.valid_use_count == 1000


@pytest.mark.parametrize("code", [7, "7", "PERMISSION_DENIED", "permission_denied"])
async def test_configured_status(tmp_path: Path, code: object) -> None:
    handler = _handler(
        {"status": {"code": code, "message": "Not allowed"}, "validDuration": "1m30s", "validUseCount": 3},
        tmp_path,
    )
    result = await handler.handle_check(ListEntryInstance("blocked.istio-system", value="x"))
    assert result.status.code is Code.PERMISSION_DENIED
    assert result.status.message == "Not allowed"
    assert result.valid_duration == timedelta(seconds=90)
    assert result.valid_use_count == 3


@pytest.mark.parametrize(("given", "expected"), [("250ms", 0.25), (2, 2.0), (0.5, 0.5), ("1h", 3600.0)])
def test_valid_duration_forms(given: object, expected: float) -> None:
    assert DenierConfig.model_validate({"valid_duration": given}).valid_duration.total_seconds() == expected


async def test_quota_grants_nothing(tmp_path: Path) -> None:
    handler = _handler({"valid_duration": "10s"}, tmp_path)
    assert isinstance(handler, QuotaHandler)
    result = await handler.handle_quota(QuotaInstance("rq.istio-system"), QuotaArgs("dedup-1", 5))
    assert result.granted_amount == 0
    # Mixer's denier answers quotas with an empty result: the configured duration is for checks.
    assert result.valid_duration == timedelta(0)
    assert result.status.ok


@pytest.mark.parametrize(
    "params",
    [
        {"status": {"code": "NOPE"}},
        {"status": {"code": 7, "details": []}},
        {"valid_duration": "-1s"},
        {"valid_duration": "5 parsecs"},
        {"valid_use_count": -1},
        {"deny": True},
    ],
)
def test_invalid_params(params: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        DenierConfig.model_validate(params)
