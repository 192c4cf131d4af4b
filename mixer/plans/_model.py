"""Plans as the runtime sees them: validated, expressions compiled, windows resolved.

The config loader builds these from ``kind: plan`` documents (see docs/quotas.md); quota stores
and the handlers that enforce plans read them. Nothing here touches the network or the disk.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from mixer.expr import CompiledExpression
from mixer.quota import Algorithm, CalendarUnit, Window

#: The dimensions a limit may name without an expression; their values come from the check.
BUILTIN_DIMENSIONS: Final = ("subject", "api", "operation")

#: Nominal lengths of the calendar units, for algorithms that need a fixed period (GCRA, rolling).
CALENDAR_UNIT_SECONDS: Final = {
    CalendarUnit.MINUTE: 60.0,
    CalendarUnit.HOUR: 3600.0,
    CalendarUnit.DAY: 86400.0,
}


class Overage(enum.Enum):
    """What happens when a limit is exceeded."""

    #: Deny the request (RESOURCE_EXHAUSTED) and spend nothing on any limit of the plan.
    REJECT = "reject"
    #: Let it through, flag it (``x-mixer-overage``) and count it: a limit on trial.
    SHADOW = "shadow"


@dataclass(frozen=True, slots=True)
class Dimension:
    """One part of a limit's counter key: a built-in name, or a name with an expression."""

    name: str
    expression: CompiledExpression | None = None


@dataclass(frozen=True, slots=True)
class LimitConfig:
    """One limit of a plan: ``max`` units per window, counted per the values of ``dimensions``.

    ``window`` places fixed windows (epoch- or calendar-aligned); ``period`` is the length in
    seconds of a rolling window or a GCRA period (a calendar unit's nominal length). ``per`` is
    the text configured, for messages.
    """

    name: str
    max: int
    per: str
    algorithm: Algorithm
    period: float
    window: Window | None = None
    burst: int = 0
    buckets: int = 10
    cost: CompiledExpression | None = None
    dimensions: tuple[Dimension, ...] = (Dimension("subject"),)
    overage: Overage = Overage.REJECT

    @property
    def bucket_seconds(self) -> float:
        return self.period / self.buckets

    def window_length(self, now: float) -> float:
        """Seconds in the window containing ``now`` (a calendar month or a DST day varies)."""
        if self.algorithm is Algorithm.FIXED_WINDOW and self.window is not None:
            start, end = self.window.bounds(now)
            return end - start
        return self.period


@dataclass(frozen=True, slots=True)
class PlanConfig:
    """A plan tier: its limits, all allocated together on every check of a subject on the plan.

    ``fingerprint`` changes whenever anything in the plan's document does, so that a reload can
    tell whether handlers built with the plan must be rebuilt. ``source`` says where it was defined.
    """

    name: str
    limits: tuple[LimitConfig, ...] = ()
    description: str = ""
    fingerprint: str = ""
    source: str = ""
