"""CheckResponse: referenced attributes, route directives and quota results."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol

from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

from mixer.decision import CheckOutcome, HeaderOperationKind, HeaderOperationResult
from mixer.proto.istio.mixer.v1.check_pb2 import (
    CheckResponse,
    HeaderOperation,
    ReferencedAttributes,
    RouteDirective,
)
from mixer.status import Status
from mixer.values import AttributeMatch, Condition
from mixer.wire._dictionary import GLOBAL_WORDS
from mixer.wire._encode import WordTable, duration_of
from mixer.wire._errors import WireDecodeError

_CONDITIONS: Final = {int(c): c for c in Condition}
_WIRE_CONDITIONS: Final = {
    Condition.CONDITION_UNSPECIFIED: ReferencedAttributes.CONDITION_UNSPECIFIED,
    Condition.ABSENCE: ReferencedAttributes.ABSENCE,
    Condition.EXACT: ReferencedAttributes.EXACT,
    Condition.REGEX: ReferencedAttributes.REGEX,
}


_WIRE_OPERATIONS: Final = {
    HeaderOperationKind.REPLACE: HeaderOperation.REPLACE,
    HeaderOperationKind.REMOVE: HeaderOperation.REMOVE,
    HeaderOperationKind.APPEND: HeaderOperation.APPEND,
}


class _StatusMessage(Protocol):
    """The google.rpc.Status fields we set (its generated module ships no type information)."""

    code: int
    message: str

    @property
    def details(self) -> RepeatedCompositeFieldContainer[AnyProto]: ...


def encode_referenced_attributes(matches: Sequence[AttributeMatch]) -> ReferencedAttributes:
    """The wire form of the attributes a decision read, names and map keys as dictionary indices."""
    msg = ReferencedAttributes()
    _fill_referenced(msg, matches)
    return msg


def _fill_referenced(msg: ReferencedAttributes, matches: Sequence[AttributeMatch]) -> None:
    table = WordTable()
    add = msg.attribute_matches.add
    for match in matches:
        entry = add()
        entry.name = table.index(match.name)
        entry.condition = _WIRE_CONDITIONS[match.condition]
        if match.map_key is not None:
            entry.map_key = table.map_key_index(match.map_key)
    msg.words.extend(table.words)


def decode_referenced_attributes(msg: ReferencedAttributes) -> list[AttributeMatch]:
    """The matches a ReferencedAttributes lists, in wire order (map_key 0 is no key).

    :raises WireDecodeError: an index outside the dictionaries or an unknown condition.
    """
    words = msg.words

    def word(what: str, index: int) -> str:
        if index >= 0:
            if index < len(GLOBAL_WORDS):
                return GLOBAL_WORDS[index]
            raise WireDecodeError(
                f"{what} index {index} out of range: global dictionary has {len(GLOBAL_WORDS)} words"
            )
        if -index <= len(words):
            return words[-index - 1]
        raise WireDecodeError(f"{what} index {index} out of range: message has {len(words)} words")

    matches: list[AttributeMatch] = []
    for entry in msg.attribute_matches:
        name = word("referenced attribute name", entry.name)
        condition = _CONDITIONS.get(entry.condition)
        if condition is None:
            raise WireDecodeError(f"referenced attribute {name!r} has unknown condition {entry.condition}")
        map_key = word(f"map key of referenced attribute {name!r}", entry.map_key) if entry.map_key else None
        matches.append(AttributeMatch(name, condition, map_key))
    return matches


def _status(msg: _StatusMessage, status: Status, details: Sequence[AnyProto] = ()) -> None:
    msg.code = int(status.code)
    msg.message = status.message
    msg.details.extend(details)


def _header_ops(ops: Sequence[HeaderOperationResult]) -> list[HeaderOperation]:
    return [
        HeaderOperation(name=op.name, value=op.value, operation=_WIRE_OPERATIONS[op.operation]) for op in ops
    ]


def build_check_response(
    outcome: CheckOutcome,
    *,
    details: Sequence[AnyProto] = (),
    direct_response_code: int = 0,
    direct_response_body: str = "",
) -> CheckResponse:
    """The CheckResponse for a Check's outcome.

    The precondition status is always sent (code 0 when allowed). A route directive is sent only
    when it asks for something, and a quota's status only when it is not OK: an absent status
    reads as OK to every proxy, and that is what Mixer sends.
    """
    response = CheckResponse()
    result = response.precondition
    _status(result.status, outcome.status, details)
    result.valid_duration.CopyFrom(duration_of(outcome.valid_duration))
    result.valid_use_count = outcome.valid_use_count
    if outcome.referenced:
        _fill_referenced(result.referenced_attributes, outcome.referenced)
    request_ops, response_ops = outcome.request_header_operations, outcome.response_header_operations
    if request_ops or response_ops or direct_response_code or direct_response_body:
        route: RouteDirective = result.route_directive
        route.request_header_operations.extend(_header_ops(request_ops))
        route.response_header_operations.extend(_header_ops(response_ops))
        route.direct_response_code = direct_response_code
        route.direct_response_body = direct_response_body
    for name, grant in outcome.quotas.items():
        quota = response.quotas[name]
        quota.granted_amount = grant.granted_amount
        quota.valid_duration.CopyFrom(duration_of(grant.valid_duration))
        if not grant.status.ok:
            _status(quota.status, grant.status)
        if grant.referenced:
            _fill_referenced(quota.referenced_attributes, grant.referenced)
    return response
