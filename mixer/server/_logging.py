"""The server's own logs: plain text or JSON lines, on stderr (stdout belongs to access logs)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Final, TextIO

from mixer.redact import RedactingFilter, redact_value

#: LogRecord attributes that are not ``extra=`` fields.
_STANDARD_FIELDS: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime", "taskName"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (RFC 3339, UTC), ``level``, ``logger``, ``message``,
    ``worker`` when set, any ``extra=`` fields, and ``exception`` with the traceback."""

    def __init__(self, worker_index: int | None = None) -> None:
        super().__init__()
        self._worker = worker_index

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="microseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self._worker is not None:
            entry["worker"] = self._worker
        for key, value in record.__dict__.items():
            if key not in _STANDARD_FIELDS and key not in entry:
                entry[key] = redact_value(value)
        if record.exc_info:
            # RedactingFilter leaves the redacted traceback in exc_text.
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(
    level: str, log_format: str, *, worker_index: int | None = None, stream: TextIO | None = None
) -> None:
    """Send every logger's records at ``level`` and above to ``stream`` (stderr) in ``log_format``
    (``text`` or ``json``), replacing the root logger's handlers. Secrets are redacted from every
    record (:class:`mixer.redact.RedactingFilter`)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(RedactingFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter(worker_index))
    else:
        prefix = f"[worker {worker_index}] " if worker_index is not None else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s %(name)s: {prefix}%(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiohttp and grpc log every access and connection hiccup at INFO; ours say what matters.
    for noisy in ("aiohttp.access", "grpc._cython.cygrpc"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
