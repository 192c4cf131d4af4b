"""Phases 1 and 2 of a config load: documents declared as objects, attribute manifests merged."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from mixer.attributes import AttributeInfo, AttributeManifest
from mixer.config._compiler import (
    CORE_KINDS,
    OTHER_API_GROUPS,
    OUT_OF_PROCESS_KINDS,
    PROXY_SIDE_KINDS,
    ROLE_HANDLER,
    ROLE_INSTANCE,
    ROLE_MANIFEST,
    CompilerBase,
    DeclaredObject,
    describe_value,
    did_you_mean,
    pydantic_message,
    subject_hint,
)
from mixer.config._documents import (
    AttributeManifestSpec,
    Envelope,
)
from mixer.config._errors import join_path, loc_path
from mixer.config._model import (
    SourceRef,
)


class DocumentPhase(CompilerBase):
    """Declares the objects of each document and merges the attribute manifests."""

    # -- phase 1: documents to declared objects ---------------------------------------------

    def _for_another_controller(self, body: dict[str, Any]) -> bool:
        """A Kubernetes object of another API group (not a Mixer kind under a wrong apiVersion)."""
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if not isinstance(api_version, str) or not isinstance(kind, str):
            return False
        group, _, version = api_version.rpartition("/")
        if group not in OTHER_API_GROUPS or (group == "" and version != "v1"):
            return False
        mixer_kind = (
            kind in CORE_KINDS
            or kind in OUT_OF_PROCESS_KINDS
            or self.registry.template(kind) is not None
            or self.registry.adapter_for_kind(kind) is not None
        )
        return not mixer_kind

    def _declare(self, source: SourceRef, body: Any) -> None:
        if not isinstance(body, dict):
            self.issues.add(source, f"a document must be a mapping, got {describe_value(body)}")
            return
        if body.get("kind") == "List":
            self._declare_list(source, body)
            return
        if self._for_another_controller(body):
            return
        try:
            envelope = Envelope.model_validate(body)
        except ValidationError as exc:
            subject = subject_hint(body)
            for error in exc.errors(include_url=False):
                path = join_path(source.path, loc_path(error["loc"]))
                where = SourceRef(source.file, source.document, path)
                self.issues.add(where, pydantic_message(error), subject=subject)
            return
        kind = envelope.kind
        namespace = envelope.metadata.namespace or self.default_namespace
        obj = DeclaredObject("", kind, envelope.metadata.name, namespace, source, envelope.spec)
        if kind in CORE_KINDS:
            obj.role = kind
        elif (template := self.registry.template(kind)) is not None:
            obj.role, obj.legacy_template = ROLE_INSTANCE, template
        elif (adapter := self.registry.adapter_for_kind(kind)) is not None:
            obj.role, obj.legacy_adapter = ROLE_HANDLER, adapter
        elif kind in PROXY_SIDE_KINDS:
            return
        elif kind in OUT_OF_PROCESS_KINDS:
            declared = self.oop.adapters if kind == "adapter" else self.oop.templates

            def report(path: str, message: str, obj: DeclaredObject = obj) -> None:
                self._error(obj, join_path(obj.spec_path, path), message)

            declared[f"{obj.name}.{namespace}"] = (obj.name, envelope.spec, report)
            return
        else:
            self._error(obj, join_path(source.path, "kind"), self._unknown_kind(kind))
            return
        table = self.objects[obj.role]
        previous = table.get(obj.fq_name)
        if previous is not None:
            self._error(
                obj,
                join_path(source.path, "metadata.name"),
                f'duplicate {obj.role} "{obj.fq_name}", first defined in {previous.source}',
            )
            return
        table[obj.fq_name] = obj

    def _declare_list(self, source: SourceRef, body: dict[Any, Any]) -> None:
        for key in body:
            if key not in ("apiVersion", "kind", "items", "metadata"):
                self.issues.add(
                    source, f'unknown field "{key}" in a List', path=join_path(source.path, str(key))
                )
        items = body.get("items")
        if not isinstance(items, list):
            self.issues.add(source, "a List needs a list of items", path=join_path(source.path, "items"))
            return
        for index, item in enumerate(items):
            self._declare(
                SourceRef(source.file, source.document, join_path(source.path, f"items[{index}]")), item
            )

    def _unknown_kind(self, kind: str) -> str:
        handler_kinds = sorted(k for info in self.registry.adapters.values() for k in info.kinds())
        template_kinds = sorted(self.registry.templates)
        known = [*CORE_KINDS, *handler_kinds, *template_kinds]
        hint = did_you_mean(kind, known)
        return (
            f'unknown kind "{kind}"{hint} (known kinds: {", ".join(CORE_KINDS)}; '
            f"legacy handler kinds: {', '.join(handler_kinds) or 'none'}; "
            f"legacy instance kinds: {', '.join(template_kinds) or 'none'})"
        )

    # -- phase 2: attribute manifests -------------------------------------------------------

    def _manifest(self) -> AttributeManifest:
        declared: dict[str, tuple[AttributeInfo, DeclaredObject | None]] = {
            name: (self.base_manifest.info(name), None) for name in self.base_manifest
        }
        for obj in self.objects[ROLE_MANIFEST].values():
            spec = self._spec(obj, AttributeManifestSpec)
            if spec is None:
                continue
            for name, decl in spec.attributes.items():
                previous = declared.get(name)
                if previous is not None and previous[0].value_type is not decl.valueType:
                    where = (
                        "the base attribute vocabulary" if previous[1] is None else str(previous[1].source)
                    )
                    self._error(
                        obj,
                        join_path(obj.spec_path, f"attributes.{name}.valueType"),
                        f'attribute "{name}" is declared as {decl.valueType.name} here '
                        f"and as {previous[0].value_type.name} in {where}",
                    )
                    continue
                if previous is None or (decl.description and not previous[0].description):
                    declared[name] = (AttributeInfo(name, decl.valueType, decl.description), obj)
        return AttributeManifest(info for info, _ in declared.values())
