"""Who is calling and on which plan: API keys, trusted plan claims, principals, anonymous callers.

:class:`SubjectsParams` is the ``subjects:`` section of a plan handler's params (shared by every
quota store); :class:`SubjectResolver` applies it to one check.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer
from pydantic.alias_generators import to_camel

from mixer.frozen import quick_init
from mixer.params import NonNegativeDuration, PositiveDuration
from mixer.plans._keys import (
    DEFAULT_KEY_CACHE_BYTES,
    CachedKeyStore,
    FileKeyStore,
    InlineKeyStore,
    KeyRecord,
    KeyRecordModel,
    KeyStore,
    KeyStoreInfo,
    file_key_store,
)
from mixer.status import Code, Status

#: The subject of callers on the default plan who carry no principal.
ANONYMOUS = "anonymous"


class _Params(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, validate_by_name=True, validate_by_alias=True
    )


class UnknownKey(enum.Enum):
    """The answer for an unknown API key, or for a caller with no identity and no default plan."""

    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"

    @property
    def code(self) -> Code:
        return Code[self.value]


class KeyCacheParams(_Params):
    """The bounded cache in front of a plugin key store (inline and file keys need none)."""

    max_entries: int = Field(default=10_000, ge=0, description="Keys cached at most.")
    max_bytes: int = Field(
        default=DEFAULT_KEY_CACHE_BYTES,
        ge=0,
        description="Bytes of keys and answers held (callers choose how long the keys they send are).",
    )
    ttl: NonNegativeDuration = Field(
        default=timedelta(seconds=30), description="How long a found key is remembered."
    )
    negative_ttl: NonNegativeDuration = Field(
        default=timedelta(seconds=5),
        description="How long an unknown key is remembered; short, so that a newly issued key works soon.",
    )


class KeyStorePluginParams(_Params):
    """A key store registered by a plugin: its name and its own params."""

    name: str = Field(min_length=1, description="The key store's registered name.")
    params: dict[str, Any] = Field(default={}, description="The key store's own params.")


class KeysParams(_Params):
    """Where API keys are looked up, in this order: ``inline``, ``file``, then ``store``."""

    inline: dict[str, KeyRecordModel] = Field(
        default={}, description="Keys given in the params: key -> subject and plan; shown without the keys."
    )
    file: str = Field(
        default="", description="A YAML or JSON file of the same mapping, re-read when it changes."
    )
    reload_interval: PositiveDuration = Field(
        default=timedelta(seconds=5),
        description="How often, at most, ``file`` is checked for changes (on lookups).",
    )
    store: KeyStorePluginParams | None = Field(
        default=None,
        description="A key store registered by a plugin, looked up after ``inline`` and ``file``.",
    )
    cache: KeyCacheParams = Field(
        default=KeyCacheParams(), description="The bounded cache in front of ``store``."
    )

    @field_serializer("inline")
    def _hide_keys(self, inline: dict[str, KeyRecordModel]) -> dict[str, Any]:
        # API keys are secrets: the effective config shows who has a key, never the key.
        return {f"***{i}": record.model_dump() for i, record in enumerate(inline.values(), start=1)}


class SubjectsParams(_Params):
    """How a check's caller becomes a subject on a plan."""

    keys: KeysParams = Field(default=KeysParams(), description="Where API keys are looked up.")
    trust_plan_claim: bool = Field(
        default=False,
        description=(
            "Take the instance's ``plan`` field as the caller's plan, when it is verified: computed only "
            "from attributes a check handler produced in this Check (the jwt adapter's claims) or listed "
            "in ``trusted_attributes``. A plan the caller merely sent is ignored."
        ),
    )
    trusted_attributes: list[str] = Field(
        default=[],
        description=(
            "Attributes the operator declares set by a proxy that verified them (e.g. "
            "``request.auth.claims`` behind an Envoy that checks JWTs, ``source.principal`` from mTLS); "
            "every other attribute a caller sends is self-asserted. Empty: only produced ones count."
        ),
    )
    principals: dict[str, str] = Field(
        default={},
        description=(
            "Plans of callers identified by a verified principal (mTLS identity, JWT principal): "
            "principal -> plan."
        ),
    )
    default_plan: str = Field(
        default="",
        description=(
            "The plan of callers with no API key and no other identity; empty: such callers are denied."
        ),
    )
    unknown_key: UnknownKey = Field(
        default=UnknownKey.UNAUTHENTICATED,
        description="The answer for an unknown API key, or a caller with no identity and no default plan.",
    )

    def plan_names(self) -> list[tuple[str, str]]:
        """Every plan these params name, with where (for build-time checks)."""
        named = [(f"keys.inline[***{i}].plan", r.plan) for i, r in enumerate(self.keys.inline.values(), 1)]
        named += [(f"principals[{p!r}]", plan) for p, plan in self.principals.items()]
        if self.default_plan:
            named.append(("default_plan", self.default_plan))
        return named


@quick_init
@dataclass(frozen=True, slots=True)
class Resolution:
    """A resolved caller (``status`` OK), or why not."""

    subject: str = ""
    plan: str = ""
    status: Status = field(default_factory=Status)

    @property
    def ok(self) -> bool:
        return self.status.code is Code.OK


class SubjectResolver:
    """Applies :class:`SubjectsParams` to one check's ``api_key``, ``plan`` claim and ``principal``.

    Order: an API key decides alone (an unknown key is denied, never downgraded to the default
    plan); without one, a verified plan claim with a verified principal (when
    ``trust_plan_claim``), then the ``principals`` map for a verified principal, then
    ``default_plan`` (the subject is the verified principal, else ``anonymous``: a caller cannot
    get a fresh counter by sending a fresh name); otherwise the caller is denied as for an
    unknown key. The caller says which of ``plan_claim`` and ``principal`` are verified (see
    :func:`mixer.templates.field_is_verified`); unverified ones count as absent.
    """

    def __init__(self, params: SubjectsParams, stores: list[KeyStore]) -> None:
        self.params = params
        self.stores = stores
        self.trusted = frozenset(params.trusted_attributes)
        self._denied = params.unknown_key.code

    @classmethod
    def build(
        cls,
        params: SubjectsParams,
        logger: logging.Logger,
        key_stores: Mapping[str, KeyStoreInfo],
    ) -> SubjectResolver:
        """Builds the key stores without touching disk or network (``start`` does that).

        :raises ValueError: an unknown plugin key store, or params its model rejects.
        """
        keys = params.keys
        stores: list[KeyStore] = []
        if keys.inline:
            stores.append(InlineKeyStore({k: r.record() for k, r in keys.inline.items()}))
        if keys.file:
            stores.append(file_key_store(keys.file, logger, keys.reload_interval.total_seconds()))
        if keys.store is not None:
            info = key_stores.get(keys.store.name)
            if info is None:
                known = ", ".join(sorted(key_stores)) or "none"
                raise ValueError(f'unknown key store "{keys.store.name}" (installed: {known})')
            try:
                store_params = info.config_model.model_validate(keys.store.params)
            except ValidationError as exc:
                raise ValueError(f'key store "{info.name}" params: {exc}') from exc
            cache = keys.cache
            stores.append(
                CachedKeyStore(
                    info.factory(store_params, logger),
                    max_entries=cache.max_entries,
                    max_bytes=cache.max_bytes,
                    ttl=cache.ttl.total_seconds(),
                    negative_ttl=cache.negative_ttl.total_seconds(),
                )
            )
        return cls(params, stores)

    @property
    def file_stores(self) -> list[FileKeyStore]:
        return [store for store in self.stores if isinstance(store, FileKeyStore)]

    async def resolve(
        self,
        api_key: str,
        plan_claim: str,
        principal: str,
        *,
        plan_verified: bool = False,
        principal_verified: bool = False,
    ) -> Resolution:
        """:raises Exception: a key store could not answer."""
        params = self.params
        if not plan_verified:
            plan_claim = ""
        if not principal_verified:
            principal = ""
        if api_key:
            for store in self.stores:
                record: KeyRecord | None = await store.lookup(api_key)
                if record is not None:
                    return Resolution(record.subject, record.plan)
            return Resolution(status=Status(self._denied, "unknown API key"))
        if params.trust_plan_claim and plan_claim and principal:
            return Resolution(principal, plan_claim)
        if principal:
            plan = params.principals.get(principal)
            if plan is not None:
                return Resolution(principal, plan)
        if params.default_plan:
            return Resolution(principal or ANONYMOUS, params.default_plan)
        return Resolution(status=Status(self._denied, "no API key or known identity"))

    async def start(self) -> None:
        for store in self.stores:
            await store.start()

    async def shutdown(self, timeout: float) -> None:
        for store in self.stores:
            await store.shutdown(timeout)
