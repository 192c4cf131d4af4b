"""The registry of adapters and templates that plugins filled: what config may name."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from mixer.adapter import AdapterInfo
from mixer.plans import KeyStoreInfo
from mixer.templates import BUILTIN_TEMPLATES, TemplateSpec


class RegistryError(ValueError):
    """Two registrations claim the same name."""


@dataclass(frozen=True)
class Registry:
    """Immutable lookup of adapters (by name and legacy kind), templates and API key stores (by name)."""

    adapters: Mapping[str, AdapterInfo] = field(default_factory=dict)
    templates: Mapping[str, TemplateSpec] = field(default_factory=dict)
    _by_kind: Mapping[str, AdapterInfo] = field(default_factory=dict, repr=False)
    key_stores: Mapping[str, KeyStoreInfo] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        adapters: Iterable[AdapterInfo],
        templates: Iterable[TemplateSpec] = BUILTIN_TEMPLATES,
        key_stores: Iterable[KeyStoreInfo] = (),
    ) -> Registry:
        """:raises RegistryError: a name (or legacy kind) registered twice."""
        by_name: dict[str, AdapterInfo] = {}
        by_kind: dict[str, AdapterInfo] = {}
        for info in adapters:
            if info.name in by_name:
                raise RegistryError(
                    f"adapter {info.name!r} registered twice ({by_name[info.name].origin}, {info.origin})"
                )
            by_name[info.name] = info
            for kind in info.kinds():
                if kind in by_kind:
                    raise RegistryError(
                        f"legacy kind {kind!r} claimed by {by_kind[kind].name!r} and {info.name!r}"
                    )
                by_kind[kind] = info
        by_template: dict[str, TemplateSpec] = {}
        for spec in templates:
            if spec.name in by_template:
                raise RegistryError(f"template {spec.name!r} registered twice")
            by_template[spec.name] = spec
        by_store: dict[str, KeyStoreInfo] = {}
        for store in key_stores:
            if store.name in by_store:
                raise RegistryError(f"key store {store.name!r} registered twice")
            by_store[store.name] = store
        return cls(by_name, by_template, by_kind, by_store)

    def adapter(self, name: str) -> AdapterInfo | None:
        return self.adapters.get(name)

    def adapter_for_kind(self, kind: str) -> AdapterInfo | None:
        """The adapter a legacy ``kind:`` names (``listchecker`` -> list, ``prometheus`` -> prometheus)."""
        return self._by_kind.get(kind)

    def template(self, name: str) -> TemplateSpec | None:
        return self.templates.get(name)
