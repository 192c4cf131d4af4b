"""Attributes: value types, manifests and the bags that carry a request's attributes."""

from mixer.attributes._bag import AttributeBag, AttributeMatch, Condition, TrackingBag
from mixer.attributes._manifest import ISTIO_MANIFEST, AttributeInfo, AttributeManifest
from mixer.attributes._text import format_duration, parse_duration, to_jsonable
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
    "TrackingBag",
    "ValueType",
    "conforms",
    "format_duration",
    "infer_value_type",
    "parse_duration",
    "to_jsonable",
]
