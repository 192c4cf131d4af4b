"""CheckResponse: referenced attributes, route directives and quota results."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Final, Protocol, cast

from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

from mixer.cache import ByteLRU
from mixer.compiled import CompiledModule
from mixer.decision import CheckOutcome, HeaderOperationKind, HeaderOperationResult
from mixer.proto.istio.mixer.v1.check_pb2 import (
    CheckResponse,
    HeaderOperation,
    ReferencedAttributes,
    RouteDirective,
)
from mixer.protowire import field, varint, varint_field, zigzag32
from mixer.status import Status
from mixer.values import AttributeMatch, Condition
from mixer.wire._dictionary import GLOBAL_WORDS
from mixer.wire._encode import WordTable, duration_of, duration_parts
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


class CompiledEncoder(Protocol):
    """What mixer/wire/_cencode.pyx provides (its stub, _cencode.pyi, has the same signature)."""

    def precondition(
        self, outcome: CheckOutcome, referenced_bytes: Callable[[Sequence[AttributeMatch]], bytes]
    ) -> bytes | None: ...


_MODULE = CompiledModule("mixer.wire._cencode", "CheckResponse writer", logging.getLogger("mixer.wire"))
#: The compiled writer when it is built, whether or not it is in use.
compiled_encoder = cast("CompiledEncoder | None", _MODULE.built)
_cencode = cast("CompiledEncoder | None", _MODULE.active)


def describe_check_encoder() -> str:
    """The CheckResponse writer in use, for ``mixer version``."""
    return _MODULE.description


def encode_check_response(
    outcome: CheckOutcome,
    *,
    details: Sequence[AnyProto] = (),
    direct_response_code: int = 0,
    direct_response_body: str = "",
) -> bytes:
    """:func:`build_check_response`'s message, serialized, written without building it.

    Building the response from protobuf's Python messages cost more than a tenth of a Check's
    CPU; the tests compare these bytes with the message's own serialization (quotas, a map, may be
    written in another order, which a reader does not see). The compiled writer, where built,
    writes the precondition of an answer with no details or direct response (writing it in Python
    was a tenth of a Check again); :func:`encode_check_response_python` is the definition.
    """
    cencode = _cencode
    if cencode is None:
        _MODULE.note_pure_python()
    elif not details and not direct_response_code and not direct_response_body:
        head = cencode.precondition(outcome, _referenced_bytes)
        if head is not None:
            return head + _quota_results(outcome) if outcome.quotas else head
    return encode_check_response_python(
        outcome,
        details=details,
        direct_response_code=direct_response_code,
        direct_response_body=direct_response_body,
    )


def encode_check_response_python(
    outcome: CheckOutcome,
    *,
    details: Sequence[AnyProto] = (),
    direct_response_code: int = 0,
    direct_response_body: str = "",
) -> bytes:
    """:func:`encode_check_response` in Python alone."""
    precondition = [
        field(1, _status_bytes(outcome.status, details)),
        field(2, _duration_bytes(outcome.valid_duration)),
    ]
    if outcome.valid_use_count:
        precondition.append(varint_field(3, outcome.valid_use_count))
    if outcome.referenced:
        precondition.append(field(5, _referenced_bytes(outcome.referenced)))
    request_ops, response_ops = outcome.request_header_operations, outcome.response_header_operations
    if request_ops or response_ops or direct_response_code or direct_response_body:
        route = [field(1, _header_op_bytes(op)) for op in request_ops]
        route.extend(field(2, _header_op_bytes(op)) for op in response_ops)
        if direct_response_code:
            route.append(varint_field(3, direct_response_code))
        if direct_response_body:
            route.append(field(4, direct_response_body.encode()))
        precondition.append(field(6, b"".join(route)))
    head = field(2, b"".join(precondition))
    return head + _quota_results(outcome) if outcome.quotas else head


def _quota_results(outcome: CheckOutcome) -> bytes:
    out = []
    for name, grant in outcome.quotas.items():
        result = [field(1, _duration_bytes(grant.valid_duration))]
        if grant.granted_amount:
            result.append(varint_field(2, grant.granted_amount))
        if grant.referenced:
            result.append(field(5, _referenced_bytes(grant.referenced)))
        if not grant.status.ok:
            result.append(field(6, _status_bytes(grant.status)))
        # A map entry: the key (1), then the value (2); protobuf writes both even when empty.
        out.append(field(3, field(1, name.encode()) + field(2, b"".join(result))))
    return b"".join(out)


def _status_bytes(status: Status, details: Sequence[AnyProto] = ()) -> bytes:
    # google.rpc.Status: code (1), message (2), details (3).
    out = varint_field(1, int(status.code)) if status.code else b""
    if status.message:
        out += field(2, status.message.encode())
    for detail in details:
        out += field(3, detail.SerializeToString())
    return out


def _duration_bytes(value: timedelta) -> bytes:
    # google.protobuf.Duration: seconds (1), nanos (2); negatives as protobuf writes int64 and int32.
    seconds, nanos = duration_parts(value)
    out = varint_field(1, seconds) if seconds else b""
    return out + varint_field(2, nanos) if nanos else out


def _referenced_bytes(matches: Sequence[AttributeMatch]) -> bytes:
    # A policy reads the same attributes on most calls, so most answers repeat one of a few
    # lists; writing one cost five times what finding it here does.
    key = tuple(matches)
    known = _REFERENCED.get(key)
    if known is None:
        known = _write_referenced(matches)
        _REFERENCED.put(key, known)
    return known


def _write_referenced(matches: Sequence[AttributeMatch]) -> bytes:
    # ReferencedAttributes: words (1), attribute_matches (2): name (1, sint32), condition (2),
    # map_key (4, sint32); the words are those the matches introduced, written first.
    table = WordTable()
    entries = []
    for match in matches:
        name = table.index(match.name)
        entry = varint_field(1, zigzag32(name)) if name else b""
        if match.condition:
            entry += varint_field(2, int(match.condition))
        if match.map_key is not None:
            key = table.map_key_index(match.map_key)
            entry += _MAP_KEY_TAG + varint(zigzag32(key))
        entries.append(field(2, entry))
    return b"".join([*(field(1, word.encode()) for word in table.words), *entries])


def _header_op_bytes(op: HeaderOperationResult) -> bytes:
    # HeaderOperation: name (1), value (2), operation (3).
    out = field(1, op.name.encode()) if op.name else b""
    if op.value:
        out += field(2, op.value.encode())
    if op.operation:
        out += varint_field(3, int(op.operation))
    return out


_MAP_KEY_TAG = varint(4 << 3)
#: Encoded referenced attributes by their matches; map keys come from callers, hence bytes.
_REFERENCED: Final[ByteLRU[tuple[AttributeMatch, ...], bytes]] = ByteLRU(
    1024 * 1024, name="check answers: referenced attributes"
)
