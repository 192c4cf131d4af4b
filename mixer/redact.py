"""Secrets out of text and data that leave the process: logs, ``/config``, status messages.

One helper for every place that shows something an operator or a caller configured or sent:

- :func:`redact_text`: passwords in URLs (``https://user:***@host``), credentials after
  ``Authorization``/``Proxy-Authorization``/``X-Api-Key``/``Cookie`` and after names like
  ``password``, ``token``, ``secret`` or ``api_key`` (``key=value``, ``key: value``, JSON, reprs).
- :func:`redact_value`: the same through dicts and lists, and whole values under secret-named keys.
- :class:`RedactingFilter`: a logging filter that applies :func:`redact_text` to every record.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["REDACTED", "RedactingFilter", "is_secret_name", "redact_text", "redact_url", "redact_value"]

REDACTED: Final = "***"

#: Names whose values are credentials: config keys, header names, query parameters.
_SECRET_NAME: Final = re.compile(
    r"password|passwd|pwd|token|secret|api[_-]?key|credential|authorization|cookie|private[_-]?key",
    re.IGNORECASE,
)
#: ``scheme://user:password@`` or ``scheme://token@``.
_USERINFO: Final = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s/?#@\"']+)@")
#: A secret-named key, its separator (``=``, ``:``, quoted JSON/repr forms), then the value; an
#: auth scheme (``Bearer``, ``Basic``) is kept so the log still says which kind of credential.
_KEYED: Final = re.compile(
    r"(?P<key>\b[\w.-]*(?:password|passwd|pwd|token|secret|api[_-]?key|apikey|credential|"
    r"authorization|cookie|private[_-]?key)[\w.-]*)"
    r"(?P<sep>[\"']?\s*[:=]\s*[\"']?)"
    r"(?P<scheme>(?:bearer|basic|digest|token|negotiate)\s+)?"
    r"(?P<value>[^\s\"',;&}\]]+)",
    re.IGNORECASE,
)


def is_secret_name(name: str) -> bool:
    """Whether a config key, header or parameter named ``name`` holds a credential."""
    return _SECRET_NAME.search(name) is not None


def redact_url(url: str) -> str:
    """``url`` with the password of its userinfo (or a bare token userinfo) replaced."""
    return _USERINFO.sub(_userinfo, url)


def _userinfo(match: re.Match[str]) -> str:
    user, colon, _ = match.group("userinfo").partition(":")
    kept = f"{user}:{REDACTED}" if colon else REDACTED
    return f"{match.group('scheme')}{kept}@"


def _keyed(match: re.Match[str]) -> str:
    return f"{match.group('key')}{match.group('sep')}{match.group('scheme') or ''}{REDACTED}"


def redact_text(text: str) -> str:
    """``text`` with URL passwords and credentials after secret-named keys replaced by ``***``."""
    if "@" in text:
        text = redact_url(text)
    return _KEYED.sub(_keyed, text)


def redact_value(value: Any) -> Any:
    """``value`` (JSON-like data) with secret-named keys' values replaced and strings redacted."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {
            key: REDACTED if isinstance(key, str) and is_secret_name(key) and item else redact_value(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_value(item) for item in value]
    return value


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (and exception text) with :func:`redact_text`.

    Installed on the server's log handlers, so that no call site can forget: an adapter that logs
    ``repr(exc)`` of a failed fetch from ``https://user:pass@host/list`` logs ``user:***@host``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True
