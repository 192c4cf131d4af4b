"""Attributes: value types, manifests and the bags that carry a request's attributes.

The names live in the kernel package :mod:`mixer.values` (below every layer, so that the wire
codec can build bags); this is the name the rest of Mixer and adapters import them by.
"""

from mixer import values as _values
from mixer.values import *  # noqa: F403 (every name of mixer.values, and only those)

__all__ = list(_values.__all__)
