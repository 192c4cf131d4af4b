"""Shared encoders: Mixer's stdio JSON line for log entries and metrics, as UTF-8 bytes.

The access log goes to several handlers (stdio writes it, Kafka sends it as the record value,
Elasticsearch as the document with ``@timestamp`` put in front): one line per instance and bag is
encoded once, by whichever encoder comes first, and shared as bytes by the others.

Lines are written with orjson, with the texts of times, durations and IP addresses cached. The
output is byte-identical to the ``json`` module's (``ensure_ascii=False``, compact separators),
which remains the reference (:meth:`LineEncoder.encode_reference`) and the fallback for what
orjson spells differently (floats are spelled by ``json``) or refuses (integers beyond 64 bits,
non-string map keys, lone surrogates). A line that is not valid UTF-8 (a lone surrogate from a
malformed attribute) has the offending characters replaced by ``?`` rather than being lost.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import logging
import weakref
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Protocol, cast

import orjson

from mixer.attributes import NanoDuration, format_duration, to_jsonable
from mixer.cache import ByteLRU
from mixer.compiled import CompiledModule
from mixer.redact import FieldRedaction
from mixer.templates import Instance, LogEntryInstance, MetricInstance, mixer_instance_name

__all__ = [
    "DEFAULT_SEVERITY_LEVELS",
    "LEVEL_NAMES",
    "SHARED_LINES_MAX_BYTES",
    "TEXT_FORMS_MAX_ENTRIES",
    "Level",
    "LineEncoder",
    "TextForms",
    "describe_line_encoder",
    "format_time",
    "shared_lines",
    "text_forms",
    "time_bytes",
]


class Level(enum.IntEnum):
    """Mixer's stdio levels; a level is written when at least ``output_level``."""

    INFO = 0
    WARNING = 1
    ERROR = 2


LEVEL_NAMES = {Level.INFO: "info", Level.WARNING: "warn", Level.ERROR: "error"}

#: Mixer's default severity map; configured entries are merged over it, as proto maps merge.
DEFAULT_SEVERITY_LEVELS: dict[str, Level] = {
    "INFORMATIONAL": Level.INFO,
    "informational": Level.INFO,
    "INFO": Level.INFO,
    "info": Level.INFO,
    "WARNING": Level.WARNING,
    "warning": Level.WARNING,
    "WARN": Level.WARNING,
    "warn": Level.WARNING,
    "ERROR": Level.ERROR,
    "error": Level.ERROR,
    "ERR": Level.ERROR,
    "err": Level.ERROR,
    "FATAL": Level.ERROR,
    "fatal": Level.ERROR,
}

#: Bytes of lines kept for reuse by the other encoders of the same log entry.
SHARED_LINES_MAX_BYTES = 8 * 1024 * 1024
#: Texts kept per kind (times, durations, IP addresses) before that kind's cache is emptied.
TEXT_FORMS_MAX_ENTRIES = 4096


def format_time(value: datetime) -> str:
    """Mixer's stdio time: RFC 3339 in UTC with microseconds (``2019-01-02T15:04:05.000000Z``)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    elif value.utcoffset():
        value = value.astimezone(UTC)
    # isoformat is several times faster than strftime; every access log line has two times.
    return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _ip_text(value: Any) -> str:
    return str(value)


class TextForms:
    """JSON texts of times, durations and IP addresses, by exact type; durations and addresses cached.

    A workload's addresses and the common durations repeat from record to record. Each kind keeps
    at most ``max_entries`` texts (a few hundred KB); a full cache is emptied and counted in
    ``resets``.
    """

    __slots__ = ("_caches", "_forms", "hits", "max_entries", "resets")

    def __init__(self, max_entries: int = TEXT_FORMS_MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self.hits = 0
        self.resets = 0
        self._forms: dict[type, Callable[[Any], str]] = {
            datetime: format_time,
            timedelta: format_duration,
            NanoDuration: format_duration,
            ipaddress.IPv4Address: _ip_text,
            ipaddress.IPv6Address: _ip_text,
        }
        self._caches: dict[type, dict[Any, str]] = {kind: {} for kind in self._forms}

    def kinds(self) -> frozenset[type]:
        return frozenset(self._forms)

    def text(self, value: Any) -> str:
        """The text of ``value``, whose exact type is one of :meth:`kinds`."""
        kind = type(value)
        if kind is datetime:
            # Not cached: request times are unique, and hashing an aware datetime (its utcoffset)
            # cost more than formatting it in the fan-out's profile.
            return format_time(value)
        cache = self._caches[kind]
        text = cache.get(value)
        if text is not None:
            self.hits += 1
            return text
        text = self._forms[kind](value)
        if len(cache) >= self.max_entries:
            cache.clear()
            self.resets += 1
        cache[value] = text
        return text


text_forms = TextForms()
_TEXT_KINDS = text_forms.kinds()


class CompiledLine(Protocol):
    """What mixer/_cline.pyx provides (its stub, _cline.pyi, has the same signatures)."""

    def configure(self, utc: tzinfo, text_of: Callable[[Any], str], text_kinds: frozenset[type]) -> None: ...

    def fields(self, variables: dict[str, Any]) -> bytes | None: ...

    def time_text(self, moment: datetime) -> bytes | None: ...


_COMPILED = CompiledModule("mixer._cline", "access-log line encoder", logging.getLogger("mixer.encoding"))
#: The compiled line encoder when it is built, whether or not it is in use.
compiled = cast("CompiledLine | None", _COMPILED.built)
#: The compiled line encoder in use, or None for the Python path alone.
cline = cast("CompiledLine | None", _COMPILED.active)
if compiled is not None:
    compiled.configure(UTC, text_forms.text, _TEXT_KINDS)


def time_bytes(value: datetime) -> bytes:
    """:func:`format_time` as UTF-8, written by the compiled line encoder when it is in use."""
    encoder = cline
    if encoder is not None:
        text = encoder.time_text(value)
        if text is not None:
            return text
    return format_time(value).encode()


def describe_line_encoder() -> str:
    """The access-log line encoder in use, for ``mixer version``."""
    return _COMPILED.description


def _json_default(value: Any) -> Any:
    if type(value) in _TEXT_KINDS:
        return text_forms.text(value)
    if isinstance(value, datetime):
        return format_time(value)
    return to_jsonable(value)


_ENCODE = json.JSONEncoder(default=_json_default, ensure_ascii=False, separators=(",", ":")).encode
# Datetimes and dataclasses go to _json_default as with the json module; other subclasses of
# str, int, dict and list are written as their base type by both.
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_ORJSON_DUMPS = orjson.dumps
_FRAGMENT = orjson.Fragment


def _dumps(value: dict[str, Any]) -> str:
    return _ENCODE(value)


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "replace")


_HEADER_KEYS = frozenset({"level", "time", "instance"})


def _prepared_variables(variables: Mapping[str, Any]) -> dict[str, Any] | None:
    """A log entry's fields in one pass: sorted, absent and header-named ones left out, values
    prepared as :func:`_prepared` does; None when the ``json`` module must write them."""
    # Keys are unique, so sorting the pairs never compares values.
    out = _prepared(sorted(variables.items()), keep_none=False)
    if out is not None and ("level" in out or "time" in out or "instance" in out):
        for key in _HEADER_KEYS:
            out.pop(key, None)
    return out


def _prepared(fields: Iterable[tuple[str, Any]], *, keep_none: bool = True) -> dict[str, Any] | None:
    """``fields`` with the values orjson would spell differently replaced by their ``json`` text;
    None when a nested value might differ (the caller then uses the ``json`` module)."""
    out: dict[str, Any] = {}
    forms = text_forms
    for key, value in fields:
        kind = type(value)
        if kind is str or kind is int or kind is bool:
            out[key] = value
        elif value is None:
            if keep_none:
                out[key] = None
        elif kind in _TEXT_KINDS:
            out[key] = forms.text(value)
        elif kind is float:
            out[key] = _FRAGMENT(_ENCODE(value))
        elif kind is dict:
            for item in value.values():
                if type(item) is not str:
                    return None
            out[key] = value
        else:
            return None
    return out


class SharedLines:
    """Lines already encoded for log entries, shared by every encoder in the process.

    One access log entry usually goes to several handlers (stdio, Kafka, Elasticsearch), each of
    which writes this same line: the second and later encoders of an instance reuse the first's
    bytes. Entries hold the instance itself, so its id cannot be reused while cached. The bound is
    in bytes: an entry keeps its line and its instance's values (about as large again) alive, and
    callers choose how long those are; the least recently used go first.

    Encoders register their settings: where only one live encoder has them (stdio alone, as in
    Istio's stock telemetry), no other can ask for the line again, and it is not cached.
    """

    def __init__(self, max_bytes: int = SHARED_LINES_MAX_BYTES) -> None:
        self._lines: ByteLRU[tuple[int, Any], tuple[Instance, bytes | None]] = ByteLRU(
            max_bytes, size=_shared_line_size, name="stdio.shared_lines"
        )
        self._encoders: dict[Any, int] = {}

    def register(self, settings: Any) -> None:
        """One more live encoder with ``settings``."""
        self._encoders[settings] = self._encoders.get(settings, 0) + 1

    def unregister(self, settings: Any) -> None:
        """One encoder with ``settings`` fewer (it was collected)."""
        left = self._encoders.get(settings, 0) - 1
        if left > 0:
            self._encoders[settings] = left
        else:
            self._encoders.pop(settings, None)

    @property
    def cache(self) -> ByteLRU[tuple[int, Any], tuple[Instance, bytes | None]]:
        return self._lines

    @property
    def hits(self) -> int:
        return self._lines.hits

    @property
    def evicted(self) -> int:
        return self._lines.evictions

    def get(
        self,
        instance: LogEntryInstance,
        settings: Any,
        encode: Callable[[LogEntryInstance], bytes | None],
    ) -> bytes | None:
        if self._encoders.get(settings) == 1:
            return encode(instance)
        key = (id(instance), settings)
        cached = self._lines.get(key)
        if cached is not None and cached[0] is instance:
            return cached[1]
        line = encode(instance)
        self._lines.put(key, (instance, line))
        return line


def _shared_line_size(key: tuple[int, Any], value: tuple[Instance, bytes | None]) -> int:
    # The line, and the instance's values it was made of (about the line's size again); walking
    # the instance would cost more than encoding it.
    line = value[1]
    return 2 * len(line) if line is not None else 0


shared_lines = SharedLines()
_SETTINGS_IDS: dict[tuple[Any, ...], int] = {}


class LineEncoder:
    """Turns logentry and metric instances into Mixer's stdio lines (zap's JSON or console form).

    JSON: ``{"level", "time", "instance", ...fields}`` with the fields sorted; a logentry's fields
    are its variables (absent ones left out), a metric's are ``value`` then its dimensions. Field
    names that clash with level, time or instance are dropped.
    """

    def __init__(
        self,
        now: Callable[[], datetime],
        *,
        as_json: bool = True,
        severity_levels: Mapping[str, Level] | None = None,
        metric_level: Level = Level.INFO,
        output_level: Level = Level.INFO,
        redact: FieldRedaction | None = None,
    ) -> None:
        self._json = as_json
        self._severity = dict(DEFAULT_SEVERITY_LEVELS if severity_levels is None else severity_levels)
        self._metric_level = metric_level
        self._min_level = output_level
        self._now = now
        self._redact = redact
        # Encoders with equal settings write equal lines for one timestamped log entry; a small
        # int stands for the settings so the cache key hashes cheaply.
        settings = (self._json, tuple(sorted(self._severity.items())), self._min_level, self._redact)
        self._settings = _SETTINGS_IDS.setdefault(settings, len(_SETTINGS_IDS))
        shared_lines.register(self._settings)
        weakref.finalize(self, shared_lines.unregister, self._settings)
        # '{"level":"info","time":"' per level, and '","instance":"<name>"' per instance name.
        self._heads = {level: f'{{"level":"{name}","time":"'.encode() for level, name in LEVEL_NAMES.items()}
        # By shown name, or by (instance name, template) for log entries.
        self._names: dict[str | tuple[str, str], bytes] = {}

    def encode(self, instance: Instance) -> str | None:
        """The line for ``instance`` as text (see :meth:`encode_bytes`)."""
        line = self.encode_bytes(instance)
        return None if line is None else line.decode()

    def encode_bytes(self, instance: Instance) -> bytes | None:
        """The line for ``instance`` as UTF-8, or None when it is below ``output_level`` or of no
        template this encoder writes."""
        if isinstance(instance, LogEntryInstance):
            if instance.timestamp is None:
                return self._log_line(instance, self._now())
            return shared_lines.get(instance, self._settings, self._log_line)
        if isinstance(instance, MetricInstance):
            if self._metric_level < self._min_level:
                return None
            fields = {"value": instance.value, **dict(sorted(instance.dimensions.items()))}
            if self._redact is not None:
                fields = self._redact.apply(fields)
            name = mixer_instance_name(instance.name, instance.template)
            return self._line(self._metric_level, self._now(), name, fields)
        return None

    def encode_reference(self, instance: Instance) -> str | None:
        """The line through the ``json`` module alone, uncached (what :meth:`encode_bytes` equals)."""
        if isinstance(instance, LogEntryInstance):
            level = self._severity.get(instance.severity or "", Level.INFO)
            if level < self._min_level:
                return None
            fields = {k: v for k, v in sorted(instance.variables.items()) if v is not None}
            if self._redact is not None:
                fields = self._redact.apply(fields)
            name = mixer_instance_name(instance.name, instance.template)
            return self._text_line(level, instance.timestamp or self._now(), name, fields)
        if isinstance(instance, MetricInstance):
            if self._metric_level < self._min_level:
                return None
            fields = {"value": instance.value, **dict(sorted(instance.dimensions.items()))}
            if self._redact is not None:
                fields = self._redact.apply(fields)
            name = mixer_instance_name(instance.name, instance.template)
            return self._text_line(self._metric_level, self._now(), name, fields)
        return None

    def _log_line(self, instance: LogEntryInstance, when: datetime | None = None) -> bytes | None:
        level = self._severity.get(instance.severity or "", Level.INFO)
        if level < self._min_level:
            return None
        variables = instance.variables
        if self._json:
            # Redaction sees the raw values (a hash of the value's own text), as on the json path;
            # absent values and the field order do not change what it does.
            source = variables if self._redact is None else self._redact.apply(variables)
            when = when or instance.timestamp or self._now()
            encoder = cline
            if encoder is None:
                _COMPILED.note_pure_python()
                body = None
            elif type(source) is dict:
                body = encoder.fields(source)
            else:
                body = None
            if body is None:
                prepared = _prepared_variables(source)
                body = self._json_body(prepared) if prepared is not None else None
            if body is not None:
                line = self._joined(level, when, instance.name, instance.template, body)
                if line is not None:
                    return line
        fields = {k: v for k in sorted(variables) if (v := variables[k]) is not None}
        if self._redact is not None:
            fields = self._redact.apply(fields)
        name = mixer_instance_name(instance.name, instance.template)  # newlog.instance.istio-system
        return self._line(level, when or instance.timestamp or self._now(), name, fields)

    def _line(self, level: Level, when: datetime, name: str, fields: dict[str, Any]) -> bytes:
        if not self._json:
            return _utf8(self._text_line(level, when, name, fields))
        if "level" in fields or "time" in fields or "instance" in fields:
            fields = {k: v for k, v in fields.items() if k not in _HEADER_KEYS}
        prepared = _prepared(fields.items())
        if prepared is not None:
            line = self._json_line(level, when, name, None, prepared)
            if line is not None:
                return line
        return _utf8(self._text_line(level, when, name, fields))

    def _json_line(
        self, level: Level, when: datetime, name: str, template: str | None, prepared: dict[str, Any]
    ) -> bytes | None:
        """The JSON line of prepared fields; None when orjson refuses them."""
        body = self._json_body(prepared)
        return None if body is None else self._joined(level, when, name, template, body)

    @staticmethod
    def _json_body(prepared: dict[str, Any]) -> bytes | None:
        try:
            return _ORJSON_DUMPS(prepared, default=_json_default, option=_ORJSON_OPTIONS)
        except orjson.JSONEncodeError:
            return None  # a lone surrogate, an integer beyond 64 bits: the json module's spelling

    def _joined(
        self, level: Level, when: datetime, name: str, template: str | None, body: bytes
    ) -> bytes | None:
        """The line: the header, then the fields of ``body`` (a JSON object). With ``template``,
        ``name`` is the instance's and its Mixer name is derived (and cached) here; None when
        orjson refuses the name."""
        middle = self._names.get(name if template is None else (name, template))
        if middle is None:
            shown = name if template is None else mixer_instance_name(name, template)
            try:
                middle = b'","instance":' + _ORJSON_DUMPS(shown)
            except orjson.JSONEncodeError:
                return None
            if len(self._names) < TEXT_FORMS_MAX_ENTRIES:
                self._names[name if template is None else (name, template)] = middle
        head = self._heads[level] + time_bytes(when) + middle
        if len(body) == 2:  # {}
            return head + b"}"
        return head + b"," + body[1:]

    def _text_line(self, level: Level, when: datetime, name: str, fields: dict[str, Any]) -> str:
        if self._json:
            record: dict[str, Any] = {
                "level": LEVEL_NAMES[level],
                "time": format_time(when),
                "instance": name,
            }
            for key, value in fields.items():
                record.setdefault(key, value)
            return _dumps(record)
        return "\t".join((format_time(when), LEVEL_NAMES[level], name, _dumps(fields)))
