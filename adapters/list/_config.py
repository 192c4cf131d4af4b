"""The list adapter's params, Mixer-compatible (listchecker) plus a few bounds of our own."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from adapters.list._lists import EntryType, build_list
from mixer.attributes import format_duration
from mixer.params import NonNegativeDuration, PositiveDuration
from mixer.redact import redact_url

_SCHEMES = ("http", "https", "file")


class ListConfig(BaseModel):
    """Params of a ``list`` (legacy kind ``listchecker``) handler.

    snake_case and camelCase keys are both accepted. With no ``provider_url`` the list is just
    ``overrides``.
    """

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, validate_by_name=True, validate_by_alias=True
    )

    provider_url: str = Field(
        default="",
        description="Where to fetch the list from: ``http(s)://`` or ``file://`` (one entry per line).",
    )
    refresh_interval: PositiveDuration = Field(
        default=timedelta(seconds=60), description="How often to fetch the list again."
    )
    ttl: PositiveDuration = Field(
        default=timedelta(seconds=300),
        description="How long a fetched list stays usable without a successful refresh.",
    )
    caching_interval: NonNegativeDuration = Field(
        default=timedelta(seconds=300), description="How long a proxy may cache an answer."
    )
    caching_use_count: int = Field(
        default=10000, ge=0, description="How many uses a proxy may answer from its cache."
    )
    overrides: list[str] = Field(
        default_factory=list, description="Entries always in the list, in addition to the fetched ones."
    )
    entry_type: EntryType = Field(
        default=EntryType.STRINGS,
        description=(
            "How entries compare: ``STRINGS``, ``CASE_INSENSITIVE_STRINGS``, ``IP_ADDRESSES`` (CIDR "
            "ranges) or ``REGEX``."
        ),
    )
    blacklist: bool = Field(
        default=False,
        description=(
            "``false``: only listed values pass (PERMISSION_DENIED otherwise); ``true``: listed values "
            "are denied."
        ),
    )
    fetch_timeout: PositiveDuration = Field(
        default=timedelta(seconds=10), description="Bound on one fetch (ours, not Mixer's)."
    )
    max_list_bytes: int = Field(
        default=16 * 1024 * 1024, gt=0, description="Bound on the size of a fetched list (ours, not Mixer's)."
    )

    @model_validator(mode="after")
    def _check(self) -> ListConfig:
        if self.provider_url:
            parts = urlsplit(self.provider_url)
            if parts.scheme not in _SCHEMES:
                raise ValueError(
                    f"provider_url must be an http, https or file URL, got {redact_url(self.provider_url)!r}"
                )
            if parts.scheme != "file" and not parts.hostname:
                raise ValueError(f"provider_url {redact_url(self.provider_url)!r} names no host")
            if parts.scheme == "file" and not parts.path:
                raise ValueError(f"provider_url {redact_url(self.provider_url)!r} names no file")
            if self.ttl < self.refresh_interval:
                raise ValueError(
                    f"ttl ({format_duration(self.ttl)}) must not be shorter than "
                    f"refresh_interval ({format_duration(self.refresh_interval)})"
                )
        # Bad overrides are config errors now rather than failed checks later.
        build_list(self.entry_type, self.overrides)
        return self
