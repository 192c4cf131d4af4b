"""Report instances to documents: the stdio adapter's JSON line plus ``@timestamp``, routed to an index."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from adapters.elasticsearch._config import ElasticsearchConfig
from mixer.attributes import to_jsonable
from mixer.delivery import Record
from mixer.encoding import LineEncoder, format_time, time_bytes
from mixer.templates import Instance, LogEntryInstance, MetricInstance, TraceSpanInstance

__all__ = ["TIMESTAMP_FIELD", "DocumentEncoder"]

TIMESTAMP_FIELD = "@timestamp"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Span fields that are not written as document fields: the name is written as "instance".
_SPAN_SKIPPED = frozenset({"name"})
# strftime directives that depend on the date only: index names from such patterns are cached per day.
_DATE_DIRECTIVES = frozenset("YyCGgmdjUWVuw%")
_ROUTE_CACHE_MAX = 64
_TIMESTAMP_HEAD = f'{{"{TIMESTAMP_FIELD}":"'.encode()


def _utc(value: datetime) -> datetime:
    # Naive times are taken as UTC, as the stdio adapter's format_time takes them.
    zone = value.tzinfo
    if zone is UTC:
        return value
    return value.replace(tzinfo=UTC) if zone is None else value.astimezone(UTC)


def _encode(text: str) -> bytes:
    # A lone surrogate (from a malformed attribute) cannot be UTF-8; replacing it keeps the document.
    return text.encode("utf-8", "replace")


class DocumentEncoder:
    """Turns logentry, metric and tracespan instances into :class:`~mixer.delivery.Record` objects.

    A logentry or metric document is exactly the stdio adapter's JSON line (``level``, ``time``,
    ``instance``, then the fields) with ``@timestamp`` first: the logentry's timestamp, or the
    encoding time when it has none and for metrics. A tracespan document is ``@timestamp`` (its
    start time), ``instance``, then its set fields by name. A field named ``@timestamp`` in the
    instance is dropped. ``Record.route`` is the target: the data stream, or the index pattern
    formatted with ``@timestamp``.
    """

    def __init__(self, config: ElasticsearchConfig, now: Callable[[], datetime]) -> None:
        self._now = now
        self._data_stream = config.data_stream
        self._index = config.index
        self._index_is_fixed = "%" not in config.index
        self._index_is_daily = set(re.findall(r"%(.)", config.index)) <= _DATE_DIRECTIVES
        self._routes: dict[date, str] = {}
        # The stdio encoder asks for the time only when an instance carries none; it is then the
        # time this encoder picked, so that "time" and "@timestamp" agree.
        self._when = _EPOCH
        self._lines = LineEncoder(lambda: self._when, redact=config.redact)

    def route(self, when: datetime) -> str:
        """The index or data stream a document stamped ``when`` goes to."""
        if self._data_stream is not None:
            return self._data_stream
        if self._index_is_fixed:
            return self._index
        when = _utc(when)
        if not self._index_is_daily:
            return when.strftime(self._index)
        day = when.date()
        route = self._routes.get(day)
        if route is None:
            if len(self._routes) >= _ROUTE_CACHE_MAX:
                self._routes.clear()
            route = self._routes[day] = when.strftime(self._index)
        return route

    def encode(self, instance: Instance) -> Record | None:
        """The record for ``instance``, or None for templates this adapter does not write."""
        if isinstance(instance, TraceSpanInstance):
            return self._span(instance)
        if isinstance(instance, LogEntryInstance):
            when = _utc(instance.timestamp or self._now())
            if TIMESTAMP_FIELD in instance.variables:
                instance = dataclasses.replace(instance, variables=_without_timestamp(instance.variables))
        elif isinstance(instance, MetricInstance):
            when = _utc(self._now())
            if TIMESTAMP_FIELD in instance.dimensions:
                instance = dataclasses.replace(instance, dimensions=_without_timestamp(instance.dimensions))
        else:
            return None
        self._when = when
        line = self._lines.encode_bytes(instance)
        if line is None:
            return None
        # The stdio line is a JSON object; @timestamp goes in front without decoding it again.
        return Record(_TIMESTAMP_HEAD + time_bytes(when) + b'",' + line[1:], self.route(when))

    def _span(self, span: TraceSpanInstance) -> Record:
        when = _utc(span.start_time or span.end_time or self._now())
        document: dict[str, Any] = {TIMESTAMP_FIELD: format_time(when), "instance": span.name}
        for spec in dataclasses.fields(span):
            value = getattr(span, spec.name)
            if spec.name in _SPAN_SKIPPED or value is None:
                continue
            if isinstance(value, datetime):
                document[spec.name] = format_time(value)
            elif isinstance(value, dict):
                document[spec.name] = {k: to_jsonable(v) for k, v in value.items() if k != TIMESTAMP_FIELD}
            else:
                document[spec.name] = to_jsonable(value)
        payload = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
        return Record(_encode(payload), self.route(when))


def _without_timestamp(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k != TIMESTAMP_FIELD}
