"""Attributes: value types, manifests and the bags that carry a request's attributes."""

from mixer.attributes._bag import AttributeBag, AttributeMatch, Condition, TrackingBag
from mixer.attributes._manifest import ISTIO_MANIFEST, AttributeInfo, AttributeManifest
from mixer.attributes._text import (
    NanoDuration,
    duration_from_nanoseconds,
    format_duration,
    nano_duration,
    nanoseconds_of,
    parse_duration,
    to_jsonable,
)
from mixer.attributes._types import AttributeValue, IPAddress, ValueType, conforms, infer_value_type

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
