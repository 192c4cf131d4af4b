"""Mesh Mixer: a policy and telemetry hub for service meshes.

Third-party adapters import only from here: ``from mixer import hookimpl`` and the adapter base
types re-exported below.
"""

from __future__ import annotations

import pluggy

from mixer.adapter import (
    AdapterInfo,
    AttributeHandler,
    CheckHandler,
    CheckResult,
    DeliveryAck,
    Handler,
    HandlerEnv,
    HandlerOverloaded,
    QuotaArgs,
    QuotaHandler,
    QuotaResult,
    ReportBatch,
    ReportHandler,
    Stability,
    lazy_factory,
)
from mixer.attributes import AttributeBag, AttributeManifest, ValueType
from mixer.status import Code, Status

__version__ = "0.1.0"

PROJECT_NAME = "mixer"
#: Marks a plugin's hook implementations: ``@hookimpl def mixer_register_adapters(): ...``.
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

__all__ = [
    "PROJECT_NAME",
    "AdapterInfo",
    "AttributeBag",
    "AttributeHandler",
    "AttributeManifest",
    "CheckHandler",
    "CheckResult",
    "Code",
    "DeliveryAck",
    "Handler",
    "HandlerEnv",
    "HandlerOverloaded",
    "QuotaArgs",
    "QuotaHandler",
    "QuotaResult",
    "ReportBatch",
    "ReportHandler",
    "Stability",
    "Status",
    "ValueType",
    "__version__",
    "hookimpl",
    "lazy_factory",
]
