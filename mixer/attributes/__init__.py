"""Attributes: value types, manifests and the bags that carry a request's attributes.

The names live in the kernel package :mod:`mixer.values` (below every layer, so that the wire
codec can build bags); this is the name the rest of Mixer and adapters import them by.
"""

from mixer.values import (
    ISTIO_MANIFEST,
    AttributeBag,
    AttributeInfo,
    AttributeManifest,
    AttributeMatch,
    AttributeValue,
    Condition,
    IPAddress,
    NanoDuration,
    TrackingBag,
    ValueType,
    conforms,
    duration_from_nanoseconds,
    format_duration,
    infer_value_type,
    nano_duration,
    nanoseconds_of,
    parse_duration,
    to_jsonable,
)

__all__ = [
    "ISTIO_MANIFEST",
    "AttributeBag",
    "AttributeInfo",
    "AttributeManifest",
    "AttributeMatch",
    "AttributeValue",
    "Condition",
    "IPAddress",
    "NanoDuration",
    "TrackingBag",
    "ValueType",
    "conforms",
    "duration_from_nanoseconds",
    "format_duration",
    "infer_value_type",
    "nano_duration",
    "nanoseconds_of",
    "parse_duration",
    "to_jsonable",
]
