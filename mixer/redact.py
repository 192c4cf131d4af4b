"""Secrets out of text and data that leave the process: logs, ``/config``, status messages.

One helper for every place that shows something an operator or a caller configured or sent:

- :func:`redact_text`: passwords in URLs (``https://user:***@host``), credentials after
  ``Authorization``/``Proxy-Authorization``/``X-Api-Key``/``Cookie`` and after names like
  ``password``, ``token``, ``secret`` or ``api_key`` (``key=value``, ``key: value``, JSON, reprs).
- :func:`redact_value`: the same through dicts and lists, and whole values under secret-named keys.
- :class:`RedactingFilter`: a logging filter that applies :func:`redact_text` to every record.
- :class:`FieldRedaction`: the ``redact:`` param of telemetry handlers (stdio, kafka,
  elasticsearch): named fields of each record hashed, masked or dropped before they are written.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import re
from collections.abc import Mapping
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = [
    "REDACTED",
    "FieldRedaction",
    "RedactMode",
    "RedactingFilter",
    "is_secret_name",
    "redact_text",
    "redact_url",
    "redact_value",
]

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


class RedactMode(enum.StrEnum):
    """What :class:`FieldRedaction` does to a field's value."""

    #: ``sha256:`` and the first 16 hex digits of SHA-256 over the salt and the value: stable, so
    #: records can still be grouped by the value, but the value cannot be read back.
    HASH = "hash"
    #: ``***``.
    MASK = "mask"
    #: The field is left out.
    DROP = "drop"


#: Hex digits of the digest kept by ``hash``: 64 bits, plenty to group by, short in a log line.
HASH_DIGITS: Final = 16


class FieldRedaction(BaseModel):
    """Fields of written records (a logentry's variables, a metric's dimensions) to redact.

    ``fields`` are names as the instance has them (``apiKey``); ``mode`` applies to all of them;
    ``salt`` (secret, hidden in ``/config``) is prefixed to each value before hashing, so that a
    hash cannot be matched against a list of known keys without it. Empty values stay empty.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    fields: tuple[str, ...] = Field(
        min_length=1, description="Names of the fields to redact, as the instance has them (``apiKey``)."
    )
    mode: RedactMode = Field(
        default=RedactMode.HASH,
        description=(
            "``hash``: ``sha256:`` and 16 hex digits of the salted value (records still group by "
            "it); ``mask``: ``***``; ``drop``: the field is left out."
        ),
    )
    salt: SecretStr = Field(
        default=SecretStr(""),
        description="Prefixed to each value before hashing; a secret (hidden in ``/config``).",
    )

    def apply(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``values`` with the named fields redacted."""
        out = dict(values)
        for name in self.fields:
            value = out.get(name)
            if value is None:
                continue
            if self.mode is RedactMode.DROP:
                del out[name]
            elif value != "":
                out[name] = REDACTED if self.mode is RedactMode.MASK else self.digest(value)
        return out

    def digest(self, value: Any) -> str:
        text = value if isinstance(value, str) else str(value)
        data = self.salt.get_secret_value().encode() + text.encode("utf-8", "surrogatepass")
        return "sha256:" + hashlib.sha256(data).hexdigest()[:HASH_DIGITS]
