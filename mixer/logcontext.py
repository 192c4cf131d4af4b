"""What a log line is about: the handler, the config generation and the request, as context variables.

The call envelope (:mod:`mixer.api`) and the runtime's dispatch set them around the work they do;
the server's log formatter (:mod:`mixer.server`) adds the ones that are set to every line. Context
variables follow asyncio tasks, so concurrent calls never see each other's values.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Final

__all__ = ["FIELDS", "MAX_REQUEST_ID", "current_fields", "generation", "handler", "request_id"]

#: The handler a line was logged from (while the runtime calls it).
handler: Final[ContextVar[str | None]] = ContextVar("mixer_log_handler", default=None)
#: The generation of the runtime (config) a call runs on.
generation: Final[ContextVar[int | None]] = ContextVar("mixer_log_generation", default=None)
#: The request's id: ``request.id`` (``x-request-id``) or the deduplication id; unset when neither.
request_id: Final[ContextVar[str | None]] = ContextVar("mixer_log_request_id", default=None)

#: Field names in log lines, in order, with their variables.
FIELDS: Final[tuple[tuple[str, ContextVar[str | None] | ContextVar[int | None]], ...]] = (
    ("handler", handler),
    ("generation", generation),
    ("request_id", request_id),
)

#: Request ids longer than this are cut: a caller's header must not make every log line huge.
MAX_REQUEST_ID: Final = 128


def current_fields() -> dict[str, str | int]:
    """The fields that are set in the current context."""
    found: dict[str, str | int] = {}
    for name, var in FIELDS:
        value = var.get()
        if value is not None:
            found[name] = value
    return found
