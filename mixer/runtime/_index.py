"""The compiled rule index a runtime dispatches from: built once per configuration."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeAlias, TypeVar

from mixer.adapter import CheckHandler, QuotaHandler
from mixer.attributes import AttributeBag, AttributeValue
from mixer.config import HeaderOperationKind, SamplingConfig
from mixer.expr import CompiledExpression
from mixer.templates import Instance

Evaluate: TypeAlias = Callable[[AttributeBag], AttributeValue]
Build: TypeAlias = Callable[[AttributeBag], Instance]
Sampler: TypeAlias = Callable[[AttributeBag], bool]

#: (index of the handler in the runtime's report handler list, instance builder, instance name)
ReportAction: TypeAlias = tuple[int, Build, str]
#: (match or None, sampler or None, actions, rule name): a tuple because Report unpacks it per record.
ReportRule: TypeAlias = tuple[Evaluate | None, Sampler | None, tuple[ReportAction, ...], str]

#: Where the identity namespace of a request comes from, in order of preference, by the reporter
#: kind (``context.reporter.kind``, ``inbound`` when absent): the server side's own namespace for an
#: inbound report, the client's for an outbound one, as Mixer's dispatcher. Any other kind has none.
IDENTITY_NAMESPACE_ATTRIBUTES: Mapping[str, tuple[str, ...]] = {
    "inbound": ("destination.namespace", "destination.service.namespace"),
    "outbound": ("source.namespace",),
}
REPORTER_KIND_ATTRIBUTE = "context.reporter.kind"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class HeaderOp:
    name: str
    values: tuple[Evaluate, ...]
    operation: HeaderOperationKind


@dataclass(frozen=True, slots=True)
class CheckAction:
    handler_name: str
    handler: CheckHandler
    instance_name: str
    build: Build
    #: The template wants the request's bag and the Check's deduplication id on each instance.
    request_context: bool = False
    #: ``<action name>.output.``: the rule's header operations read the handler's outputs by it.
    output_prefix: str = ""
    #: For request-context instances: the expression of each configured value field, evaluated
    #: again to learn which attributes the field's value came from.
    fields: Mapping[str, CompiledExpression] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CheckRule:
    name: str
    match: Evaluate | None
    actions: tuple[CheckAction, ...]
    request_headers: tuple[HeaderOp, ...] = ()
    response_headers: tuple[HeaderOp, ...] = ()
    #: Some action answers with outputs: the header operations run once the handlers answered.
    deferred_headers: bool = False


@dataclass(frozen=True, slots=True)
class QuotaAction:
    handler_name: str
    handler: QuotaHandler
    instance_name: str
    build: Build


@dataclass(frozen=True, slots=True)
class QuotaRule:
    name: str
    match: Evaluate | None
    actions: tuple[QuotaAction, ...]


@dataclass(frozen=True, slots=True)
class Scoped(Generic[T]):
    """The rules of one variety as seen from each identity namespace, in configuration order.

    ``default`` holds the default config namespace's rules (they apply to all traffic);
    ``by_namespace[N]`` holds those merged with N's own rules, precomputed so that a request
    selects its list with one dict lookup and dispatch keeps the configured rule order.
    """

    default: tuple[T, ...] = ()
    by_namespace: Mapping[str, tuple[T, ...]] | None = None

    @property
    def needs_namespace(self) -> bool:
        # Reading the identity namespace is itself a reference a cached Check depends on, so it
        # is only read when some rule is scoped to a namespace.
        return self.by_namespace is not None

    def select(self, namespace: str | None) -> tuple[T, ...]:
        if self.by_namespace is None or namespace is None:
            return self.default
        return self.by_namespace.get(namespace, self.default)

    @classmethod
    def of(cls, rules: list[tuple[str | None, T]]) -> Scoped[T]:
        """``rules`` are (namespace or None for the default namespace, rule) in config order."""
        namespaces = {ns for ns, _ in rules if ns is not None}
        default = tuple(rule for ns, rule in rules if ns is None)
        if not namespaces:
            return cls(default)
        by_namespace = {n: tuple(rule for ns, rule in rules if ns is None or ns == n) for n in namespaces}
        return cls(default, by_namespace)


def identity_namespace(bag: AttributeBag) -> str | None:
    kind = bag.get(REPORTER_KIND_ATTRIBUTE)
    for name in IDENTITY_NAMESPACE_ATTRIBUTES.get(kind if isinstance(kind, str) else "inbound", ()):
        value = bag.get(name)
        if value is not None:
            return value if isinstance(value, str) else None
    return None


def make_sampler(
    config: SamplingConfig | None, rng: Callable[[], float], clock: Callable[[], float]
) -> Sampler | None:
    """A predicate that says whether one matching record is kept, or None to keep every record.

    Istio's rule sampling: with both settings a record must be selected by both (each decides on
    every matching record, so neither skews the other's count).

    - Random: ``random_percent`` of records. Unless ``random_use_independent_randomness``, the
      draw is a stable hash of ``request.id``, so every report of one request (and every worker
      process) makes the same choice; records without a request id draw from ``rng``.
    - Rate limit: in each ``rate_sampling_duration`` window (by ``clock``, in seconds; no duration
      means one endless window) the first ``rate_max_unsampled_entries`` records pass, then the
      first of every ``rate_sampling_rate``.
    """
    if config is None:
        return None
    random_sampler = _random_sampler(config, rng)
    limit_sampler = _rate_limit_sampler(config, clock)
    if random_sampler is None:
        return limit_sampler
    if limit_sampler is None:
        return random_sampler
    drawn, limited = random_sampler, limit_sampler

    def both(bag: AttributeBag) -> bool:
        selected = drawn(bag)
        return limited(bag) and selected

    return both


_HASH_SPACE = float(1 << 32)


def _random_sampler(config: SamplingConfig, rng: Callable[[], float]) -> Sampler | None:
    percent = config.random_percent
    if percent is None or percent >= 100:
        return None
    if percent <= 0:
        return lambda bag: False
    fraction = percent / 100.0
    if config.random_use_independent_randomness:
        return lambda bag: rng() < fraction

    def by_request_id(bag: AttributeBag) -> bool:
        request_id = bag.get("request.id")
        if isinstance(request_id, str) and request_id:
            # crc32, not hash(): the choice must agree across processes and restarts.
            return zlib.crc32(request_id.encode()) / _HASH_SPACE < fraction
        return rng() < fraction

    return by_request_id


def _rate_limit_sampler(config: SamplingConfig, clock: Callable[[], float]) -> Sampler | None:
    rate = max(config.rate_sampling_rate or 1, 1)
    unsampled = max(config.rate_max_unsampled_entries, 0)
    if config.rate_sampling_rate is None or (unsampled == 0 and rate == 1):
        return None
    duration = config.rate_sampling_duration
    window = duration.total_seconds() if duration else None
    return _RateLimit(rate, unsampled, window, clock)


class _RateLimit:
    __slots__ = ("_clock", "_rate", "_seen", "_start", "_unsampled", "_window")

    def __init__(self, rate: int, unsampled: int, window: float | None, clock: Callable[[], float]) -> None:
        self._rate = rate
        self._unsampled = unsampled
        self._window = window
        self._clock = clock
        self._start = clock() if window is not None else 0.0
        self._seen = 0

    def __call__(self, bag: AttributeBag) -> bool:
        if self._window is not None:
            now = self._clock()
            if now - self._start >= self._window:
                self._start = now
                self._seen = 0
        self._seen += 1
        beyond = self._seen - self._unsampled
        return beyond <= 0 or (beyond - 1) % self._rate == 0
