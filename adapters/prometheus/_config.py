"""The prometheus adapter's params: Mixer's ``adapter.prometheus.config.Params`` plus our listener fields."""

from __future__ import annotations

import enum
import math
import re
from datetime import timedelta
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from mixer.params import PositiveDuration

#: The scrape port Istio's telemetry deployment used for this adapter.
DEFAULT_LISTEN = "127.0.0.1:42422"
DEFAULT_NAMESPACE = "istio"
DEFAULT_MAX_SERIES = 100_000
#: Every series of a histogram holds one counter per bucket; this keeps a typo from costing gigabytes.
MAX_BUCKETS = 1000
#: Reserved for the adapter's own metrics, which share the handler's exposition.
SELF_METRIC_PREFIX = "mixer_prometheus_"

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# Mixer's safeName: how a metric name is derived from an instance name when none is given.
_SAFE_NAME = str.maketrans({"/": "_", ".": "_", " ": "_", "-": None})


def safe_name(name: str) -> str:
    """Mixer's conversion of an instance name into a metric name (``a.b-c`` -> ``a_bc``)."""
    return name.removeprefix("/").translate(_SAFE_NAME)


def _check_metric_name(value: str, what: str) -> str:
    if not _METRIC_NAME.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not a valid Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)")
    return value


class _Model(BaseModel):
    # Mixer configs in the wild use both the proto field names and their JSON (camelCase) names.
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        # Errors name fields the way this package's docs do, whichever spelling the input used.
        loc_by_alias=False,
    )


class MetricKind(enum.StrEnum):
    GAUGE = "GAUGE"
    COUNTER = "COUNTER"
    DISTRIBUTION = "DISTRIBUTION"


class ExplicitBuckets(_Model):
    """Upper bounds as given: ``len(bounds) + 1`` buckets counting the overflow bucket."""

    bounds: list[float] = Field(
        min_length=1, max_length=MAX_BUCKETS, description="Upper bounds, strictly increasing and finite."
    )

    @field_validator("bounds")
    @classmethod
    def _increasing(cls, bounds: list[float]) -> list[float]:
        for i, bound in enumerate(bounds):
            if not math.isfinite(bound):
                raise ValueError(f"bounds[{i}] must be finite, got {bound}")
            if i and bound <= bounds[i - 1]:
                raise ValueError(
                    f"bounds must be strictly increasing: bounds[{i}]={bound} <= {bounds[i - 1]}"
                )
        return bounds

    def upper_bounds(self) -> tuple[float, ...]:
        return tuple(self.bounds)


class LinearBuckets(_Model):
    """Upper bounds ``offset + width * i`` for ``i`` in ``0..num_finite_buckets``."""

    num_finite_buckets: int = Field(gt=0, le=MAX_BUCKETS, description="Number of finite buckets.")
    width: float = Field(gt=0, allow_inf_nan=False, description="Distance between two bounds.")
    offset: float = Field(default=0.0, allow_inf_nan=False, description="The lowest bound.")

    def upper_bounds(self) -> tuple[float, ...]:
        return tuple(self.offset + self.width * i for i in range(self.num_finite_buckets + 1))


class ExponentialBuckets(_Model):
    """Upper bounds ``scale * growth_factor ** i`` for ``i`` in ``0..num_finite_buckets``."""

    num_finite_buckets: int = Field(gt=0, le=MAX_BUCKETS, description="Number of finite buckets.")
    growth_factor: float = Field(gt=1, allow_inf_nan=False, description="Ratio between two bounds (above 1).")
    scale: float = Field(gt=0, allow_inf_nan=False, description="The lowest bound.")

    @model_validator(mode="after")
    def _finite(self) -> Self:
        try:
            top = self.scale * self.growth_factor**self.num_finite_buckets
        except OverflowError:
            top = math.inf
        if not math.isfinite(top):
            raise ValueError("the largest bucket bound scale * growth_factor ** num_finite_buckets overflows")
        return self

    def upper_bounds(self) -> tuple[float, ...]:
        return tuple(self.scale * self.growth_factor**i for i in range(self.num_finite_buckets + 1))


class BucketsDefinition(_Model):
    """Exactly one of the three layouts (a oneof in Mixer's proto)."""

    explicit_buckets: ExplicitBuckets | None = Field(default=None, description="Bounds as given.")
    linear_buckets: LinearBuckets | None = Field(default=None, description="Bounds ``offset + width * i``.")
    exponential_buckets: ExponentialBuckets | None = Field(
        default=None, description="Bounds ``scale * growth_factor ** i``."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [
            name
            for name in ("explicit_buckets", "linear_buckets", "exponential_buckets")
            if getattr(self, name) is not None
        ]
        if len(given) != 1:
            found = ", ".join(given) or "none"
            raise ValueError(
                "exactly one of explicit_buckets, linear_buckets, exponential_buckets is required "
                f"(found: {found})"
            )
        return self

    def upper_bounds(self) -> tuple[float, ...]:
        layout = self.explicit_buckets or self.linear_buckets or self.exponential_buckets
        assert layout is not None  # guaranteed by _exactly_one
        return layout.upper_bounds()


class MetricInfo(_Model):
    """One Prometheus metric fed by one metric instance."""

    instance_name: str = Field(
        min_length=1,
        description=(
            "Fully qualified instance name (``requestcount.istio-system``); the legacy "
            "``requestcount.metric.istio-system`` / ``requestcount.instance.istio-system`` forms and a "
            "bare ``requestcount`` (any namespace) are accepted too."
        ),
    )
    name: str = Field(
        default="",
        description=(
            "Defaults to the instance name made safe the way Mixer did (``requestcount_istiosystem``)."
        ),
    )
    namespace: str = Field(
        default=DEFAULT_NAMESPACE,
        description="Prefix joined with ``_``; empty means the default, as in Mixer.",
    )
    description: str = Field(default="", description="The metric's help text.")
    kind: MetricKind = Field(description="``GAUGE``, ``COUNTER`` or ``DISTRIBUTION`` (a histogram).")
    label_names: list[str] = Field(
        default_factory=list, description="The labels, each named after one of the instance's dimensions."
    )
    buckets: BucketsDefinition | None = Field(
        default=None, description="Required for DISTRIBUTION; ignored for the other kinds, as in Mixer."
    )

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        return _check_metric_name(name, "name") if name else name

    @field_validator("namespace")
    @classmethod
    def _valid_namespace(cls, namespace: str) -> str:
        return _check_metric_name(namespace, "namespace") if namespace else DEFAULT_NAMESPACE

    @field_validator("label_names")
    @classmethod
    def _valid_labels(cls, names: list[str]) -> list[str]:
        seen: set[str] = set()
        for i, label in enumerate(names):
            if not _LABEL_NAME.fullmatch(label):
                raise ValueError(
                    f"label_names[{i}] {label!r} is not a valid Prometheus label name "
                    "([a-zA-Z_][a-zA-Z0-9_]*)"
                )
            if label.startswith("__"):
                raise ValueError(f"label_names[{i}] {label!r}: names starting with '__' are reserved")
            if label in seen:
                raise ValueError(f"label_names[{i}] {label!r} is listed twice")
            seen.add(label)
        return names

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if not self.name:
            derived = safe_name(self.instance_name)
            _check_metric_name(derived, f"name (derived from instance_name {self.instance_name!r})")
        if self.kind is MetricKind.DISTRIBUTION:
            if self.buckets is None:
                raise ValueError(f"buckets: required for kind DISTRIBUTION (metric {self.full_name!r})")
            if "le" in self.label_names:
                raise ValueError(f"label_names: 'le' is reserved in histograms (metric {self.full_name!r})")
        if self.full_name.startswith(SELF_METRIC_PREFIX):
            raise ValueError(f"name: {self.full_name!r}: the prefix {SELF_METRIC_PREFIX!r} is reserved")
        return self

    @property
    def full_name(self) -> str:
        """``<namespace>_<name>``: ``istio_requests_total`` for ``requests_total``."""
        return f"{self.namespace}_{self.name or safe_name(self.instance_name)}"

    @property
    def exposed_name(self) -> str:
        """The name in the text exposition: ``full_name`` exactly, as Mixer's adapter wrote it.

        Mixer added no ``_total`` to counters: ``name: double_request_count`` is scraped as
        ``istio_double_request_count`` (only the OpenMetrics format, which requires the suffix,
        writes its samples as ``..._total``).
        """
        return self.full_name

    def claimed_names(self) -> frozenset[str]:
        """Every family and sample name the metric writes in either exposition format, for clash checks."""
        exposed = self.exposed_name
        names = {exposed}
        if self.kind is MetricKind.COUNTER:
            family = exposed.removesuffix("_total")  # the OpenMetrics family and sample names
            names.update((family, f"{family}_total"))
        elif self.kind is MetricKind.DISTRIBUTION:
            names.update(f"{exposed}{suffix}" for suffix in ("_bucket", "_count", "_sum"))
        return frozenset(names)


class MetricsExpirationPolicy(_Model):
    """Series not updated for ``metrics_expiry_duration`` are removed, checked every interval."""

    metrics_expiry_duration: PositiveDuration = Field(
        description="Series not updated for this long are removed."
    )
    expiry_check_interval_duration: PositiveDuration | None = Field(
        default=None, description="Defaults to half of ``metrics_expiry_duration``, as in Mixer."
    )

    @property
    def check_interval(self) -> timedelta:
        return self.expiry_check_interval_duration or self.metrics_expiry_duration / 2


class PrometheusConfig(_Model):
    """Params of a ``prometheus`` handler."""

    metrics: list[MetricInfo] = Field(
        default_factory=list, description="The metrics this handler exposes, one per metric instance."
    )
    metrics_expiration_policy: MetricsExpirationPolicy | None = Field(
        default=None, description="Removal of series not updated for a while; unset, series stay."
    )
    listen: str = Field(
        default=DEFAULT_LISTEN,
        description=(
            "``host:port`` of the scrape endpoint; port 0 picks a free one (see ``PrometheusHandler.port``)."
        ),
    )
    enable_listener: bool = Field(
        default=True,
        description="False: no HTTP listener; the handler's ``registry`` is still there to be collected.",
    )
    max_series: int = Field(
        default=DEFAULT_MAX_SERIES,
        gt=0,
        description=(
            "Label sets kept across all metrics of the handler; updates that would add more are dropped."
        ),
    )

    @field_validator("listen")
    @classmethod
    def _valid_listen(cls, listen: str) -> str:
        split_listen(listen)
        return listen

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        owners: dict[str, int] = {}
        for i, metric in enumerate(self.metrics):
            for claimed in sorted(metric.claimed_names()):
                if claimed in owners:
                    raise ValueError(
                        f"metrics[{i}].name: {metric.full_name!r} clashes with metrics[{owners[claimed]}] "
                        f"(both would write {claimed!r})"
                    )
                owners[claimed] = i
        return self

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]


def split_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:42422"`` -> ``("127.0.0.1", 42422)``; ``"[::1]:0"`` -> ``("::1", 0)``.

    :raises ValueError: no host, or a port outside 0..65535.
    """
    host, sep, port_text = listen.rpartition(":")
    if not sep or not host:
        raise ValueError(f"listen {listen!r}: expected host:port, e.g. {DEFAULT_LISTEN!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"listen {listen!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"listen {listen!r}: port must be in 0..65535")
    return host, port
