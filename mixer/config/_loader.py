"""From documents to a :class:`ValidatedConfig`: kinds, names, params, expressions, references.

Every phase keeps going after a problem so one run reports them all. Objects whose own
content is invalid still take part in name resolution, so one typo is reported once, not again
by every rule that references the object. The phases live in modules of their own; each is a
part of :class:`ConfigCompiler`, which runs them in order.
"""

from __future__ import annotations

from collections.abc import Iterable

from mixer.config._compile_handlers import HandlerPhase
from mixer.config._compile_instances import InstancePhase
from mixer.config._compile_plans import PlanPhase
from mixer.config._declare import DocumentPhase
from mixer.config._model import ValidatedConfig
from mixer.config._rules import RulePhase
from mixer.config._source import RawDocument


class ConfigCompiler(DocumentPhase, HandlerPhase, InstancePhase, RulePhase, PlanPhase):
    """Compiles the documents of one load; problems collect in ``issues``."""

    def compile(self, documents: Iterable[RawDocument]) -> ValidatedConfig | None:
        for document in documents:
            self._declare(document.source, document.body)
        manifest = self._manifest()
        handlers = self._handlers()
        instances = self._instances(manifest)
        rules = self._rules(manifest)
        plans = self._plans(manifest)
        self.oop.validate_all(self.default_namespace)
        if self.issues:
            return None
        handlers = self._oop_value_types(handlers, instances)
        return ValidatedConfig(
            manifest=manifest,
            handlers=handlers,
            instances=instances,
            rules=tuple(rules),
            default_namespace=self.default_namespace,
            plans=plans,
            oop_adapters=dict(self.oop.infos),
        )
