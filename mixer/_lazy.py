"""The former name of :mod:`mixer.lazy`, kept while adapters still import it from here."""

from mixer.lazy import lazy_getattr

__all__ = ["lazy_getattr"]
