"""logentry instances as fluentd events: Mixer's mapping, encoded once as msgpack ``[time, record]``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import msgpack

from mixer.attributes import to_jsonable
from mixer.delivery import Record
from mixer.templates import Instance, LogEntryInstance

__all__ = ["encode_entry", "mixer_instance_name"]


def _value(value: Any, integer_duration: bool) -> Any:
    if isinstance(value, timedelta):
        # msgpack has no duration; Mixer wrote milliseconds or Go's duration text.
        return int(value / timedelta(milliseconds=1)) if integer_duration else to_jsonable(value)
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return value
    return to_jsonable(value)


def mixer_instance_name(name: str) -> str:
    """The name Mixer 1.4 gave an instance: ``newlog.instance.istio-system`` for a ``kind: instance``
    document (ours: ``newlog.istio-system``); legacy ``name.kind.namespace`` names are kept."""
    parts = name.split(".")
    if len(parts) == 2:
        return f"{parts[0]}.instance.{parts[1]}"
    return name


def encode_entry(instance: Instance, integer_duration: bool, now: Callable[[], datetime]) -> Record | None:
    """The event for one logentry instance (None for other templates).

    As Mixer's adapter: the record is the instance's variables plus ``severity``; the tag is the
    ``tag`` variable when there is one (the record then carries the instance name as ``name``),
    else the instance name, both in Mixer's form (:func:`mixer_instance_name`). The event time is
    the instance's timestamp in whole seconds.
    """
    if not isinstance(instance, LogEntryInstance):
        return None
    record = {str(k): _value(v, integer_duration) for k, v in instance.variables.items()}
    record["severity"] = instance.severity or ""
    name = mixer_instance_name(instance.name)
    tag = record.pop("tag", None)
    if isinstance(tag, str) and tag:
        record["name"] = name
    else:
        tag = name
    timestamp = instance.timestamp or now()
    payload = msgpack.packb([int(timestamp.timestamp()), record], use_bin_type=True)
    return Record(payload, route=tag)
