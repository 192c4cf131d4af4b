"""What a Check decides, as plain Python values: the runtime produces them, protocol layers encode them."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final

from mixer.attributes import AttributeMatch
from mixer.status import OK, Status

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


@dataclass(frozen=True, slots=True)
class QuotaOutcome:
    """The answer for one requested quota, with the attributes that answer read."""

    granted_amount: int
    valid_duration: timedelta = DEFAULT_VALID_DURATION
    status: Status = OK
    referenced: list[AttributeMatch] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class HeaderOperationResult:
    """A header the proxy should set, append or remove (``HeaderOperation`` of a route directive)."""

    name: str
    value: str
    operation: HeaderOperationKind = HeaderOperationKind.REPLACE


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    """Everything a Check decided: the precondition, the route directive and the quotas.

    ``referenced`` lists what the precondition read; each quota carries its own list. ``headers``
    are the headers OK check handlers asked to add to the request (for example the caller's plan);
    they are also the first entries of ``request_header_operations``.
    """

    status: Status
    valid_duration: timedelta
    valid_use_count: int
    referenced: list[AttributeMatch] = field(default_factory=list)
    request_header_operations: list[HeaderOperationResult] = field(default_factory=list)
    response_header_operations: list[HeaderOperationResult] = field(default_factory=list)
    quotas: dict[str, QuotaOutcome] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
