"""Plan documents (``kind: plan``) compiled into :class:`~mixer.plans.PlanConfig`.

Every rule that pydantic cannot express alone (what ``per`` may be, which fields go with which
algorithm, expressions, dimension names) is checked here, each problem reported at its field.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mixer.attributes import AttributeManifest, ValueType, parse_duration
from mixer.config._documents import LimitSpec, PlanSpec
from mixer.expr import CompiledExpression, ExpressionError
from mixer.expr import compile as compile_expression
from mixer.plans import BUILTIN_DIMENSIONS, CALENDAR_UNIT_SECONDS, Dimension, LimitConfig, Overage, PlanConfig
from mixer.quota import Algorithm, CalendarUnit, CalendarWindow, EpochWindow, Window

#: Plan, limit and dimension names: they appear in counter keys, headers and metrics.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
MIN_PER = timedelta(seconds=1)
MAX_PER = timedelta(days=31)
_CALENDAR_UNITS = {unit.value: unit for unit in CalendarUnit}
_PER_HINT = "a duration from 1s to 31d (1m, 1h, 24h, 744h) or a calendar unit (minute, hour, day, month)"

#: Receives one problem: the field path (relative to the plan's spec) and the message.
Reporter = Callable[[str, str], None]


def valid_name(name: str) -> bool:
    return NAME_PATTERN.fullmatch(name) is not None


def compile_plan(
    name: str, spec: PlanSpec, manifest: AttributeManifest, report: Reporter, source: str = ""
) -> PlanConfig | None:
    """The compiled plan, or None when ``report`` was given any problem."""
    errors: list[str] = []

    def error(path: str, message: str) -> None:
        errors.append(path)
        report(path, message)

    limits: list[LimitConfig] = []
    seen: set[str] = set()
    for index, limit_spec in enumerate(spec.limits):
        path = f"limits[{index}]"
        if limit_spec.name in seen:
            error(f"{path}.name", f'limit "{limit_spec.name}" is defined twice in this plan')
        seen.add(limit_spec.name)
        limit = _LimitCompiler(limit_spec, path, manifest, error).compile()
        if limit is not None:
            limits.append(limit)
    if errors:
        return None
    canonical = json.dumps([name, spec.model_dump(mode="json")], sort_keys=True)
    return PlanConfig(
        name=name,
        limits=tuple(limits),
        description=spec.description,
        fingerprint=hashlib.sha256(canonical.encode()).hexdigest(),
        source=source,
    )


class _LimitCompiler:
    def __init__(
        self, spec: LimitSpec, path: str, manifest: AttributeManifest, error: Callable[[str, str], None]
    ) -> None:
        self.spec = spec
        self.path = path
        self.manifest = manifest
        self._error = error
        self.failed = False

    def error(self, field: str, message: str) -> None:
        self.failed = True
        self._error(f"{self.path}.{field}", message)

    def compile(self) -> LimitConfig | None:
        spec = self.spec
        if not valid_name(spec.name):
            self.error("name", f"{spec.name!r} is not a valid limit name (letters, digits, '_', '-', '.')")
        algorithm = Algorithm(spec.algorithm)
        per = self.per()
        window: Window | None = None
        period = 0.0
        if isinstance(per, CalendarUnit):
            if algorithm is Algorithm.FIXED_WINDOW:
                window = CalendarWindow(per, self.zone())
                period = CALENDAR_UNIT_SECONDS.get(per, 31 * 86400.0)
            elif per is CalendarUnit.MONTH:
                self.error("per", f"{algorithm.value} needs a fixed period; a month is only for fixed_window")
            else:
                period = CALENDAR_UNIT_SECONDS[per]
        elif per is not None:
            period = per.total_seconds()
            if algorithm is Algorithm.FIXED_WINDOW:
                window = EpochWindow(period)
        if spec.time_zone is not None and not (
            isinstance(per, CalendarUnit) and algorithm is Algorithm.FIXED_WINDOW
        ):
            self.error(
                "time_zone", "time_zone applies only to a fixed_window per a calendar unit (minute ... month)"
            )
        if spec.burst is not None and algorithm is not Algorithm.GCRA:
            self.error("burst", "burst applies only to algorithm gcra")
        if spec.buckets is not None and algorithm is not Algorithm.ROLLING_WINDOW:
            self.error("buckets", "buckets applies only to algorithm rolling_window")
        cost = self.cost()
        dimensions = self.dimensions()
        if self.failed:
            return None
        return LimitConfig(
            name=spec.name,
            max=spec.max,
            per=str(spec.per),
            algorithm=algorithm,
            period=period,
            window=window,
            # A token bucket as deep as the limit: "100 per minute" allows 100 at once, then the rate.
            burst=spec.burst if spec.burst is not None else spec.max,
            buckets=spec.buckets if spec.buckets is not None else 10,
            cost=cost,
            dimensions=dimensions,
            overage=Overage(spec.overage),
        )

    def per(self) -> CalendarUnit | timedelta | None:
        value = self.spec.per
        if value is None:
            self.error("per", f"required field is missing: {_PER_HINT}")
            return None
        if not isinstance(value, str):
            self.error("per", f"expected {_PER_HINT}, got {value!r}")
            return None
        text = value.strip()
        unit = _CALENDAR_UNITS.get(text)
        if unit is not None:
            return unit
        try:
            duration = _parse_per(text)
        except ValueError as exc:
            self.error("per", f"{exc}; expected {_PER_HINT}")
            return None
        if not MIN_PER <= duration <= MAX_PER:
            self.error("per", f"{text!r} is out of range: expected {_PER_HINT}")
            return None
        return duration

    def zone(self) -> ZoneInfo:
        name = self.spec.time_zone or "UTC"
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            self.error("time_zone", f'unknown time zone "{name}" (an IANA name such as Europe/Berlin)')
            return ZoneInfo("UTC")

    def cost(self) -> CompiledExpression | None:
        value = self.spec.cost
        if value is None:
            return None
        text = str(value).strip()
        if not text:
            self.error("cost", "expected an INT64 expression, got an empty text")
            return None
        return self.expression(text, "cost", ValueType.INT64)

    def dimensions(self) -> tuple[Dimension, ...]:
        entries = self.spec.dimensions
        if entries is None:
            # Limits count per subject unless told otherwise: a plan's quota is each caller's.
            return (Dimension("subject"),)
        result: list[Dimension] = []
        names: set[str] = set()
        for index, entry in enumerate(entries):
            path = f"dimensions[{index}]"
            dimension: Dimension | None = None
            if isinstance(entry, str):
                if entry not in BUILTIN_DIMENSIONS:
                    self.error(
                        path,
                        f'unknown dimension "{entry}" (built in: {", ".join(BUILTIN_DIMENSIONS)}; '
                        "others are written as {name: expression})",
                    )
                    continue
                dimension = Dimension(entry)
            else:
                dimension = self.custom_dimension(entry, path)
                if dimension is None:
                    continue
            if dimension.name in names:
                self.error(path, f'dimension "{dimension.name}" is listed twice')
                continue
            names.add(dimension.name)
            result.append(dimension)
        return tuple(result)

    def custom_dimension(self, entry: dict[str, Any], path: str) -> Dimension | None:
        if len(entry) != 1:
            self.error(path, "a custom dimension is one {name: expression} entry")
            return None
        [(name, text)] = entry.items()
        if not isinstance(name, str) or not valid_name(name):
            self.error(path, f"{name!r} is not a valid dimension name (letters, digits, '_', '-', '.')")
            return None
        if name in BUILTIN_DIMENSIONS:
            self.error(
                f"{path}.{name}", f'"{name}" is a built-in dimension: list it by name, without an expression'
            )
            return None
        if isinstance(text, bool) or not isinstance(text, str | int | float) or not str(text).strip():
            self.error(f"{path}.{name}", f"expected an expression, got {text!r}")
            return None
        expression = self.expression(str(text), f"{path}.{name}", None)
        return Dimension(name, expression) if expression is not None else None

    def expression(self, text: str, field: str, expected: ValueType | None) -> CompiledExpression | None:
        try:
            return compile_expression(text, self.manifest, expected=expected)
        except ExpressionError as exc:
            self.error(field, str(exc))
            return None


def _parse_per(text: str) -> timedelta:
    # Go has no day unit, but "31d" reads better than "744h" for the longest window.
    if text.endswith("d") and text[:-1].isdigit():
        return timedelta(days=int(text[:-1]))
    return parse_duration(text)
