"""Values: attribute value types, their text forms, manifests and the bags that carry them.

A kernel package: of Mixer it imports only the bounded cache (:mod:`mixer.cache`, kernel too),
so the wire codec (the lowest layer) can build bags and check values against manifests.
:mod:`mixer.attributes` re-exports all of it.
"""

from mixer.values._bag import AttributeBag, AttributeMatch, Condition, TrackingBag, reference_order
from mixer.values._manifest import ISTIO_MANIFEST, AttributeInfo, AttributeManifest
from mixer.values._text import (
    NanoDuration,
    duration_from_nanoseconds,
    format_duration,
    nano_duration,
    nanoseconds_of,
    parse_duration,
    to_jsonable,
)
from mixer.values._types import AttributeValue, IPAddress, ValueType, conforms, infer_value_type, parse_ip

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
    "parse_ip",
    "reference_order",
    "to_jsonable",
]
