"""Status codes (google.rpc.Code) and the status value that handlers and the runtime return."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mixer.frozen import quick_init


class Code(enum.IntEnum):
    """google.rpc.Code, the codes of gRPC statuses."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


#: How a proxy turns a denial's code into an HTTP status (mixer-v1 "Server semantics").
HTTP_STATUS_BY_CODE: dict[Code, int] = {
    Code.OK: 200,
    Code.PERMISSION_DENIED: 403,
    Code.UNAUTHENTICATED: 401,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.UNAVAILABLE: 503,
    Code.DEADLINE_EXCEEDED: 504,
    Code.INVALID_ARGUMENT: 400,
    Code.NOT_FOUND: 404,
}


def http_status(code: Code) -> int:
    return HTTP_STATUS_BY_CODE.get(code, 500)


@quick_init
@dataclass(frozen=True, slots=True)
class Status:
    code: Code = Code.OK
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.code is Code.OK


OK = Status()
