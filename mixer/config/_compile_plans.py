"""Phase 6 of a config load: plan documents compiled (see :mod:`mixer.config._plans`)."""

from __future__ import annotations

from mixer.attributes import AttributeManifest
from mixer.config._compiler import ROLE_PLAN, CompilerBase, DeclaredObject
from mixer.config._documents import PlanSpec
from mixer.config._errors import join_path
from mixer.config._plans import compile_plan, valid_name
from mixer.plans import PlanConfig


class PlanPhase(CompilerBase):
    """Compiles plans; their names are global."""

    def _plans(self, manifest: AttributeManifest) -> dict[str, PlanConfig]:
        plans: dict[str, PlanConfig] = {}
        for obj in self.objects[ROLE_PLAN].values():
            if obj.namespace != self.default_namespace:
                # Key stores and claims name plans alone, so plan names are global.
                self._error(
                    obj,
                    join_path(obj.source.path, "metadata.namespace"),
                    f"plans are global: leave the namespace out or use {self.default_namespace}",
                )
                continue
            if not valid_name(obj.name):
                self._error(
                    obj,
                    join_path(obj.source.path, "metadata.name"),
                    f"{obj.name!r} is not a valid plan name (letters, digits, '_', '-', '.')",
                )
            spec: PlanSpec | None = self._spec(obj, PlanSpec)
            if spec is None:
                continue

            def report(path: str, message: str, obj: DeclaredObject = obj) -> None:
                self._error(obj, join_path(obj.spec_path, path), message)

            plan = compile_plan(obj.name, spec, manifest, report, str(obj.source))
            if plan is not None and valid_name(obj.name):
                plans[obj.name] = plan
        return plans
