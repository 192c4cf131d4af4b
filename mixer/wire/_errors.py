"""The two ways a request can fail to decode, each tied to the gRPC status a server answers with."""

from __future__ import annotations

from typing import ClassVar

from mixer.status import Code


class WireDecodeError(ValueError):
    """A malformed istio.mixer.v1 message: the server answers INVALID_ARGUMENT with this message."""

    code: ClassVar[Code] = Code.INVALID_ARGUMENT


class ReportTooLarge(WireDecodeError):
    """A Report with more records than the server takes in one call: RESOURCE_EXHAUSTED."""

    code: ClassVar[Code] = Code.RESOURCE_EXHAUSTED


class GlobalDictionaryMismatch(ValueError):
    """The client claims more global words than this server knows: the server answers INTERNAL.

    Deliberately not a :class:`WireDecodeError`: the request is well formed, the two sides were
    built from different dictionaries, and a proxy reports the two codes differently.
    """

    code: ClassVar[Code] = Code.INTERNAL
