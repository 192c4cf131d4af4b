"""From google.rpc codes to gRPC status codes (what a failure is answered with: mixer.api._envelope)."""

from __future__ import annotations

from typing import Final

import grpc

from mixer.status import Code
from mixer.wire import GlobalDictionaryMismatch, WireDecodeError

#: google.rpc.Code and grpc.StatusCode share names and numbers.
_GRPC_CODES: Final[dict[Code, grpc.StatusCode]] = {code: grpc.StatusCode[code.name] for code in Code}


def grpc_code(code: Code) -> grpc.StatusCode:
    """The gRPC status code of a google.rpc.Code (a handler's or the runtime's verdict)."""
    return _GRPC_CODES[code]


def decode_failure(exc: WireDecodeError | GlobalDictionaryMismatch) -> tuple[grpc.StatusCode, str]:
    """The answer to a request the codec refused: INVALID_ARGUMENT for a malformed one, INTERNAL
    for one built against a larger global dictionary (each error carries its code)."""
    return _GRPC_CODES[exc.code], str(exc)
