"""The JSON bodies of ``/v1/check`` and ``/v1/report``, and the errors the HTTP endpoints answer with.

A report body is read a slice of records at a time (:func:`decode_report_body`), so that its size
is known, and refused, record by record and the event loop gets a turn between slices.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from time import perf_counter
from typing import Any, Final, NoReturn

from aiohttp import web

from mixer.api._common import ServiceLimits
from mixer.api._envelope import CallFailure
from mixer.api._json_attributes import AttributeConversionError, attributes_from_json
from mixer.attributes import AttributeBag
from mixer.decision import QuotaRequest
from mixer.runtime import yield_for
from mixer.status import Code

__all__ = [
    "REPORT_RECORD_SLICE",
    "HttpRefusal",
    "decode_json",
    "decode_report_body",
    "malformed",
    "parse_check_body",
    "parse_report_body",
]

_CHECK_KEYS: Final = frozenset({"attributes", "quotas", "deduplication_id"})
_QUOTA_KEYS: Final = frozenset({"amount", "best_effort"})
_INT64_MAX: Final = 2**63 - 1


class HttpRefusal(CallFailure):
    """A request answered with an error instead of a decision: HTTP status, code and message.

    ``decode_error``: the request itself was malformed (counted in ``mixer_decode_errors_total``).
    """

    def __init__(self, status: int, code: Code, message: str, *, decode_error: bool = False) -> None:
        super().__init__(code, message, decode_error=decode_error)
        self.status = status

    def response(self) -> web.Response:
        return web.json_response(
            {"error": {"code": self.code.name, "code_number": int(self.code), "message": self.message}},
            status=self.status,
            headers={"X-Mixer-Code": self.code.name, "Cache-Control": "no-store"},
        )


def malformed(message: str) -> NoReturn:
    raise HttpRefusal(400, Code.INVALID_ARGUMENT, message, decode_error=True)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def decode_json(body: bytes) -> Any:
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        malformed("the JSON body is nested too deeply")
    except ValueError as exc:
        malformed(f"the body is not JSON: {exc}")


def parse_check_body(
    data: object, manifest: Mapping[str, Any], limits: ServiceLimits
) -> tuple[AttributeBag, dict[str, QuotaRequest], str]:
    """The bag, quotas and deduplication id of a ``/v1/check`` body.

    :raises HttpRefusal: 400 naming what is wrong (unknown keys, shapes, attributes).
    """
    if not isinstance(data, dict):
        malformed("the body must be a JSON object with an 'attributes' object")
    unknown = sorted(set(data) - _CHECK_KEYS)
    if unknown:
        malformed(f"unknown keys {unknown} (expected {sorted(_CHECK_KEYS)})")
    try:
        values = attributes_from_json(data.get("attributes", {}), manifest, limits)
    except AttributeConversionError as exc:
        malformed(str(exc))
    dedup = data.get("deduplication_id", "")
    if not isinstance(dedup, str):
        malformed("deduplication_id must be a string")
    if len(dedup) > limits.max_string_length:
        malformed(f"deduplication_id is over the limit of {limits.max_string_length} characters")
    return AttributeBag(values), _quotas(data.get("quotas", {}), limits), dedup


def _quotas(data: object, limits: ServiceLimits) -> dict[str, QuotaRequest]:
    if not isinstance(data, dict):
        malformed("quotas must be an object of quota name to {amount, best_effort}")
    if len(data) > limits.max_map_entries:
        malformed(f"{len(data)} quotas is over the limit of {limits.max_map_entries}")
    quotas: dict[str, QuotaRequest] = {}
    for name, params in data.items():
        if len(name) > limits.max_string_length:
            malformed(f"a quota name is over the limit of {limits.max_string_length} characters")
        if not isinstance(params, dict):
            malformed(f"quotas[{name!r}] must be an object with amount and best_effort")
        unknown = sorted(set(params) - _QUOTA_KEYS)
        if unknown:
            malformed(f"quotas[{name!r}]: unknown keys {unknown} (expected amount, best_effort)")
        amount = params.get("amount", 1)
        if isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount <= _INT64_MAX:
            malformed(f"quotas[{name!r}].amount must be a non-negative integer")
        best_effort = params.get("best_effort", False)
        if not isinstance(best_effort, bool):
            malformed(f"quotas[{name!r}].best_effort must be true or false")
        quotas[name] = QuotaRequest(amount, best_effort)
    return quotas


def parse_report_body(data: object, manifest: Mapping[str, Any], limits: ServiceLimits) -> list[AttributeBag]:
    """One bag per record of a ``/v1/report`` body.

    :raises HttpRefusal: 400 naming the record and what is wrong with it.
    """
    if not isinstance(data, dict) or set(data) != {"records"}:
        malformed("the body must be a JSON object {'records': [...]} and nothing else")
    records = data["records"]
    if not isinstance(records, list):
        malformed("records must be an array of attribute objects")
    if len(records) > limits.max_report_records:
        raise _too_many_records(limits)
    return _record_bags(records, 0, manifest, limits)


def _record_bags(
    records: list[Any], first: int, manifest: Mapping[str, Any], limits: ServiceLimits
) -> list[AttributeBag]:
    bags: list[AttributeBag] = []
    for index, record in enumerate(records, first):
        try:
            bags.append(
                AttributeBag(attributes_from_json(record, manifest, limits, where=f"records[{index}]"))
            )
        except AttributeConversionError as exc:
            malformed(str(exc))
    return bags


def _too_many_records(limits: ServiceLimits) -> HttpRefusal:
    return HttpRefusal(
        413,
        Code.RESOURCE_EXHAUSTED,
        f"the report has more than {limits.max_report_records} records (see --max-report-records)",
    )


_REPORT_SHAPE: Final = "the body must be a JSON object {'records': [...]} and nothing else"
_JSON_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)
_JSON_SPACE: Final = re.compile(r"[ \t\n\r]*")


class _ReportRecords:
    """The records of a ``/v1/report`` body, parsed a few at a time.

    ``json.loads`` of a whole 4 MiB body holds the event loop for tens of milliseconds and builds
    every record before any can be counted; here the object around the array is walked by hand and
    each record parsed on its own, so the count is known (and refused) record by record.
    """

    def __init__(self, body: bytes, limits: ServiceLimits) -> None:
        try:
            self._text = body.decode(json.detect_encoding(body), "surrogatepass")
        except UnicodeDecodeError as exc:
            malformed(f"the body is not JSON: {exc}")
        self._limits = limits
        self.count = 0
        self.done = False
        self._pos = self._open()

    def _space(self, pos: int) -> int:
        match = _JSON_SPACE.match(self._text, pos)
        assert match is not None  # "*" matches the empty string
        return match.end()

    def _value(self, pos: int) -> tuple[Any, int]:
        try:
            value, end = _JSON_DECODER.raw_decode(self._text, pos)
        except RecursionError:
            malformed("the JSON body is nested too deeply")
        except ValueError as exc:
            malformed(f"the body is not JSON: {exc}")
        return value, end

    def _open(self) -> int:
        """The position of the first record, past ``{"records": [``."""
        text = self._text
        pos = self._space(0)
        if not text.startswith("{", pos):
            self._value(pos)  # not JSON at all: say so, as for any body
            malformed(_REPORT_SHAPE)
        pos = self._space(pos + 1)
        if not text.startswith('"', pos):
            self._value(0)
            malformed(_REPORT_SHAPE)
        key, pos = self._value(pos)
        pos = self._space(pos)
        if key != "records" or not text.startswith(":", pos):
            self._value(0)
            malformed(_REPORT_SHAPE)
        pos = self._space(pos + 1)
        if not text.startswith("[", pos):
            self._value(0)
            malformed("records must be an array of attribute objects")
        pos = self._space(pos + 1)
        if text.startswith("]", pos):
            self._close(pos + 1)
        return pos

    def _close(self, pos: int) -> None:
        text = self._text
        pos = self._space(pos)
        if not text.startswith("}", pos):
            self._value(0)
            malformed(_REPORT_SHAPE)
        if self._space(pos + 1) != len(text):
            self._value(0)
            malformed("the body is not JSON: extra data after the object")
        self.done = True

    def read(self, count: int) -> list[Any]:
        """Up to ``count`` more records (parsed JSON values).

        :raises HttpRefusal: 400 for malformed JSON or shape, 413 past ``max_report_records``.
        """
        text = self._text
        limit = self._limits.max_report_records
        records: list[Any] = []
        pos = self._pos
        while not self.done and len(records) < count:
            if self.count == limit:
                raise _too_many_records(self._limits)
            record, pos = self._value(pos)
            records.append(record)
            self.count += 1
            pos = self._space(pos)
            if text.startswith(",", pos):
                pos = self._space(pos + 1)
            elif text.startswith("]", pos):
                self._close(pos + 1)
            else:
                self._value(0)
                malformed("the body is not JSON: expected ',' or ']' between records")
        self._pos = pos
        return records


#: Records parsed and converted between two yields to the event loop.
REPORT_RECORD_SLICE: Final = 128


async def decode_report_body(
    body: bytes, manifest: Mapping[str, Any], limits: ServiceLimits
) -> list[AttributeBag]:
    """:func:`parse_report_body` of a raw body, a slice of records at a time with yields between.

    :raises HttpRefusal: 400 naming what is wrong; 413 past ``limits.max_report_records``.
    """
    reader = _ReportRecords(body, limits)
    bags: list[AttributeBag] = []
    while not reader.done:
        started = perf_counter()
        first = reader.count
        bags += _record_bags(reader.read(REPORT_RECORD_SLICE), first, manifest, limits)
        if not reader.done:
            await yield_for(perf_counter() - started)
    return bags
