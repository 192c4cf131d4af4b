"""What a Check decides, as plain Python values: the runtime produces them, protocol layers encode them."""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final

from mixer.frozen import quick_init
from mixer.status import OK, Status
from mixer.values import AttributeMatch

#: Answers that name no validity are cached by proxies for this long / this many uses (Mixer's).
DEFAULT_VALID_DURATION: Final = timedelta(minutes=1)
DEFAULT_VALID_USE_COUNT: Final = 10000


class HeaderOperationKind(enum.IntEnum):
    """istio.mixer.v1.HeaderOperation.Operation."""

    REPLACE = 0
    REMOVE = 1
    APPEND = 2


@dataclass(frozen=True, slots=True)
class QuotaRequest:
    """One quota a Check asks for (``CheckRequest.quotas`` values)."""

    amount: int
    best_effort: bool = False


@quick_init
@dataclass(frozen=True, slots=True)
class QuotaOutcome:
    """The answer for one requested quota, with the attributes that answer read."""

    granted_amount: int
    valid_duration: timedelta = DEFAULT_VALID_DURATION
    status: Status = OK
    referenced: list[AttributeMatch] = field(default_factory=list)


@quick_init
@dataclass(frozen=True, slots=True)
class HeaderOperationResult:
    """A header the proxy should set, append or remove (``HeaderOperation`` of a route directive)."""

    name: str
    value: str
    operation: HeaderOperationKind = HeaderOperationKind.REPLACE


@quick_init
@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    """The state of one applied rate limit, for the IETF ``RateLimit-Policy`` / ``RateLimit`` fields.

    ``name`` is the policy identifier (a plan limit's name), ``limit`` its quota per ``window``
    seconds, ``remaining`` what is left after this request and ``reset`` the seconds until the
    quota is whole again. ``retry_after`` is set on a limit that denied the request: the seconds
    until the same request could pass (``math.inf`` when it never can, e.g. a cost above a burst).
    """

    name: str
    limit: int
    remaining: int
    reset: float
    window: float
    retry_after: float | None = None


def rate_limit_headers(rate_limits: Iterable[RateLimitInfo]) -> dict[str, str]:
    """``RateLimit-Policy``, ``RateLimit`` and, for a denial, ``Retry-After`` for ``rate_limits``.

    The two RateLimit fields follow draft-ietf-httpapi-ratelimit-headers (08 and later): Structured
    Field Lists of quoted policy identifiers with the integer parameters ``q`` and ``w`` (policy)
    and ``r`` and ``t`` (current state), e.g. ``"per_minute";q=10;w=60`` and
    ``"per_minute";r=3;t=42``. Seconds are rounded up so that a client that waits as told is never
    early. ``Retry-After`` (delay-seconds) is the longest wait among the limits that denied, as
    every one of them must admit the request; it is left out when no finite wait helps.
    """
    # One pass and no generators: this runs on every Check that a plan answers.
    policy: list[str] = []
    state: list[str] = []
    longest: float | None = None
    hopeless = False
    for rl in rate_limits:
        policy.append(_policy_entry(rl.name, rl.limit, rl.window))
        state.append(f"{_sf_string(rl.name)};r={max(rl.remaining, 0)};t={_whole_seconds(rl.reset)}")
        wait = rl.retry_after
        if wait is not None:
            if not math.isfinite(wait):
                hopeless = True
            elif longest is None or wait > longest:
                longest = wait
    if not policy:
        return {}
    headers = {"RateLimit-Policy": ", ".join(policy), "RateLimit": ", ".join(state)}
    if longest is not None and not hopeless:
        headers["Retry-After"] = str(max(_whole_seconds(longest), 1))
    return headers


def _whole_seconds(seconds: float) -> int:
    if not math.isfinite(seconds):
        return 0
    return max(math.ceil(seconds - 1e-9), 0)


@functools.lru_cache(maxsize=1024)
def _policy_entry(name: str, limit: int, window: float) -> str:
    # The same text for every call within a window of a configured limit: made once.
    return f"{_sf_string(name)};q={max(limit, 0)};w={_whole_seconds(window)}"


@functools.lru_cache(maxsize=1024)
def _sf_string(text: str) -> str:
    # An sf-string holds printable ASCII only, with backslash escapes for '"' and '\\'.
    printable = "".join(ch if " " <= ch <= "~" else "?" for ch in text)
    return '"' + printable.replace("\\", "\\\\").replace('"', '\\"') + '"'


@quick_init
@dataclass(frozen=True, slots=True)
class CheckOutcome:
    """Everything a Check decided: the precondition, the route directive and the quotas.

    ``referenced`` lists what the precondition read; each quota carries its own list. ``headers``
    are the headers OK check handlers asked to add to the request (for example the caller's plan);
    they are also the first entries of ``request_header_operations``. ``rate_limits`` are the
    rate limits check handlers applied, whatever the status (a denial's say when to retry); their
    :func:`rate_limit_headers` lead ``response_header_operations``.
    """

    status: Status
    valid_duration: timedelta
    valid_use_count: int
    referenced: list[AttributeMatch] = field(default_factory=list)
    request_header_operations: list[HeaderOperationResult] = field(default_factory=list)
    response_header_operations: list[HeaderOperationResult] = field(default_factory=list)
    quotas: dict[str, QuotaOutcome] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    rate_limits: tuple[RateLimitInfo, ...] = ()
