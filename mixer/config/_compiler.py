"""What the phases of a config load share: declared objects, problems, name resolution."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from mixer.adapter import AdapterInfo
from mixer.attributes import AttributeManifest
from mixer.config._errors import IssueList, join_path, loc_path
from mixer.config._model import (
    DEFAULT_CONFIG_NAMESPACE,
    SourceRef,
)
from mixer.config._oop import OopDeclarations
from mixer.registry import Registry
from mixer.templates import TemplateSpec

CORE_KINDS = ("attributemanifest", "handler", "instance", "rule", "plan")
#: Kinds Istio's proxies (through Pilot) consume, not Mixer; accepted in a config bundle and ignored.
PROXY_SIDE_KINDS = frozenset({"QuotaSpec", "QuotaSpecBinding", "HTTPAPISpec", "HTTPAPISpecBinding"})
#: API groups of objects other controllers consume (kubectl applies them from the same file as
#: Mixer's, as Istio's OOP adapter samples do); Mixer never received them. A misspelt Mixer group
#: is not among them and is still refused.
OTHER_API_GROUPS = frozenset(
    {
        "",  # core: v1 Service, ConfigMap, ...
        "apps",
        "batch",
        "autoscaling",
        "policy",
        "rbac.authorization.k8s.io",
        "networking.k8s.io",
        "networking.istio.io",
        "security.istio.io",
        "authentication.istio.io",
    }
)
OUT_OF_PROCESS_KINDS = ("adapter", "template")
ROLE_HANDLER, ROLE_INSTANCE, ROLE_RULE, ROLE_MANIFEST = "handler", "instance", "rule", "attributemanifest"
ROLE_PLAN = "plan"


@dataclass(slots=True)
class DeclaredObject:
    """One config object as declared, before its spec is validated."""

    role: str  # handler, instance, rule, attributemanifest or plan
    kind: str  # the document's kind as written (``handler``, ``prometheus``, ``metric``, ...)
    name: str
    namespace: str
    source: SourceRef
    spec: Any
    legacy_adapter: AdapterInfo | None = None
    legacy_template: TemplateSpec | None = None
    #: Set once known, even when the params are invalid, so references can still be checked.
    adapter: AdapterInfo | None = None
    template: TemplateSpec | None = None

    @property
    def fq_name(self) -> str:
        # Istio 1.0 keyed objects by name, kind and namespace, and its stock config relies on
        # it (``handler.prometheus`` beside ``handler.stdio``), so legacy objects keep the kind.
        if self.legacy:
            return f"{self.name}.{self.kind}.{self.namespace}"
        return f"{self.name}.{self.namespace}"

    @property
    def subject(self) -> str:
        return f"{self.kind} {self.name}.{self.namespace}"

    @property
    def legacy(self) -> bool:
        return self.kind not in CORE_KINDS

    @property
    def spec_path(self) -> str:
        return join_path(self.source.path, "spec")

    @property
    def params_path(self) -> str:
        # The legacy form has the params directly under spec.
        return self.spec_path if self.legacy else join_path(self.spec_path, "params")


class CompilerBase:
    """The state of one load's compilation, which every phase reads and adds to."""

    def __init__(
        self,
        registry: Registry,
        base_manifest: AttributeManifest,
        issues: IssueList,
        default_namespace: str = DEFAULT_CONFIG_NAMESPACE,
    ) -> None:
        self.registry = registry
        self.base_manifest = base_manifest
        self.issues = issues
        self.default_namespace = default_namespace
        self.objects: dict[str, dict[str, DeclaredObject]] = {
            ROLE_MANIFEST: {},
            ROLE_HANDLER: {},
            ROLE_INSTANCE: {},
            ROLE_RULE: {},
            ROLE_PLAN: {},
        }
        self.oop = OopDeclarations()

    # -- problems ---------------------------------------------------------------------------

    def _error(self, obj: DeclaredObject, path: str, message: str) -> None:
        """``path`` is the whole field path within the document (it includes a List item's prefix)."""
        self.issues.add(SourceRef(obj.source.file, obj.source.document, path), message, subject=obj.subject)

    def _validation_errors(self, obj: DeclaredObject, path: str, exc: ValidationError) -> None:
        for error in exc.errors(include_url=False):
            self._error(obj, join_path(path, loc_path(error["loc"])), pydantic_message(error))

    def _spec(self, obj: DeclaredObject, model: type[BaseModel]) -> Any:
        spec = obj.spec if obj.spec is not None else {}
        try:
            return model.model_validate(spec)
        except ValidationError as exc:
            self._validation_errors(obj, obj.spec_path, exc)
            return None

    def resolve(self, role: str, ref: str, namespace: str) -> tuple[DeclaredObject | None, str]:
        """The object ``ref`` names, or None and why not.

        ``ref`` may be ``name`` (in the rule's namespace, then the default config namespace),
        ``name.namespace``, or the legacy ``name.kind`` / ``name.kind.namespace``.
        """
        table = self.objects[role]
        namespaces = tuple(dict.fromkeys((namespace, self.default_namespace)))
        for candidate in (*(f"{ref}.{ns}" for ns in namespaces), ref):
            if (obj := table.get(candidate)) is not None:
                return obj, ""
        # ``name.handler`` / ``name.instance[.namespace]``: the 1.1+ kinds written the legacy way.
        parts = ref.split(".")
        qualified: list[tuple[str, str]] = []
        if len(parts) >= 2:
            qualified += [(f"{'.'.join(parts[:-1])}.{ns}", parts[-1]) for ns in namespaces]
        if len(parts) >= 3:
            qualified.append((f"{'.'.join(parts[:-2])}.{parts[-1]}", parts[-2]))
        for candidate, kind in qualified:
            obj = table.get(candidate)
            if obj is not None and obj.kind == kind:
                return obj, ""
        # A bare name also finds a legacy object (named ``name.kind.namespace``) when only one fits.
        for ns in namespaces:
            found = [obj for obj in table.values() if obj.name == ref and obj.namespace == ns]
            if len(found) == 1:
                return found[0], ""
            if len(found) > 1:
                names = ", ".join(sorted(f"{obj.name}.{obj.kind}" for obj in found))
                return None, f'"{ref}" is ambiguous in namespace {ns} (write one of {names})'
        tried = " and ".join(f"{ref}.{ns}" for ns in namespaces)
        elsewhere = sorted(obj.fq_name for obj in table.values() if obj.name == ref)
        if elsewhere:
            hint = f" (other namespaces have {', '.join(elsewhere)})"
        else:
            hint = did_you_mean(parts[0], sorted({obj.name for obj in table.values()}))
        return None, f'unknown {role} "{ref}"{hint} (looked for {tried})'


_MESSAGES = {
    "extra_forbidden": "unknown field",
    "missing": "required field is missing",
}


def pydantic_message(error: Any) -> str:
    message = _MESSAGES.get(error["type"])
    if message is not None:
        return message
    text = str(error["msg"])
    # Custom validators raise ValueError; pydantic prefixes their message.
    return text.removeprefix("Value error, ")


def subject_hint(body: Mapping[Any, Any]) -> str:
    kind = body.get("kind")
    metadata = body.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    if isinstance(kind, str) and isinstance(name, str):
        namespace = metadata.get("namespace") if isinstance(metadata, Mapping) else None
        return f"{kind} {name}.{namespace or DEFAULT_CONFIG_NAMESPACE}"
    return ""


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


def describe_value(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}"
