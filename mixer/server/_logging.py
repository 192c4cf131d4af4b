"""The server's own logs: plain text or JSON lines, on stderr (stdout belongs to access logs)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Final, TextIO

from mixer import logcontext
from mixer.redact import RedactingFilter, redact_value

#: LogRecord attributes that are not ``extra=`` fields.
_STANDARD_FIELDS: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime", "taskName"}
)


class ContextFilter(logging.Filter):
    """Adds the :mod:`mixer.logcontext` fields set where the record was logged (``handler``,
    ``generation``, ``request_id``) to the record, unless ``extra=`` already gave them."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in logcontext.current_fields().items():
            if name not in record.__dict__:
                setattr(record, name, value)
        return True


class TextFormatter(logging.Formatter):
    """``time level logger: message`` and, when set, ``[handler=... generation=... request_id=...]``."""

    def __init__(self, worker_index: int | None = None) -> None:
        prefix = f"[worker {worker_index}] " if worker_index is not None else ""
        super().__init__(f"%(asctime)s %(levelname)s %(name)s: {prefix}%(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = [
            f"{name}={record.__dict__[name]}" for name, _ in logcontext.FIELDS if name in record.__dict__
        ]
        if not fields:
            return text
        head, newline, trace = text.partition("\n")
        return f"{head} [{' '.join(fields)}]{newline}{trace}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (RFC 3339, UTC), ``level``, ``logger``, ``message``,
    ``worker`` when set, ``handler``, ``generation`` and ``request_id`` when the line was logged
    in their context, any ``extra=`` fields, and ``exception`` with the traceback."""

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


def default_log_format(stream: TextIO | None = None) -> str:
    """``text`` when ``stream`` (stderr) is a terminal, where a person reads it; ``json`` otherwise,
    where a log collector does."""
    target = stream if stream is not None else sys.stderr
    try:
        return "text" if target.isatty() else "json"
    except (AttributeError, ValueError):
        return "json"


def configure_logging(
    level: str, log_format: str, *, worker_index: int | None = None, stream: TextIO | None = None
) -> None:
    """Send every logger's records at ``level`` and above to ``stream`` (stderr) in ``log_format``
    (``text`` or ``json``), replacing the root logger's handlers. Secrets are redacted from every
    record (:class:`mixer.redact.RedactingFilter`)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.addFilter(ContextFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter(worker_index))
    else:
        handler.setFormatter(TextFormatter(worker_index))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiohttp and grpc log every access and connection hiccup at INFO; ours say what matters.
    for noisy in ("aiohttp.access", "grpc._cython.cygrpc"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
