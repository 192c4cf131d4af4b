"""Phase 3 of a config load: handlers and their adapters' params."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from mixer.adapter import AdapterInfo
from mixer.config._compiler import (
    ROLE_HANDLER,
    CompilerBase,
    DeclaredObject,
    describe_value,
    did_you_mean,
)
from mixer.config._documents import (
    HandlerSpec,
)
from mixer.config._errors import join_path
from mixer.config._instances import CompiledInstanceBuilder
from mixer.config._model import (
    HandlerConfig,
    InstanceConfig,
)
from mixer.config._oop import OOP_PREFIX, value_types


class HandlerPhase(CompilerBase):
    """Resolves each handler's adapter and validates its params."""

    # -- phase 3: handlers ------------------------------------------------------------------

    def _handlers(self) -> dict[str, HandlerConfig]:
        handlers: dict[str, HandlerConfig] = {}
        for obj in self.objects[ROLE_HANDLER].values():
            if obj.legacy_adapter is not None:
                obj.adapter = obj.legacy_adapter
                params = obj.spec
            else:
                spec: HandlerSpec | None = self._spec(obj, HandlerSpec)
                if spec is None:
                    continue
                if spec.connection is not None:
                    self._oop_handler(obj, spec, handlers)
                    continue
                obj.adapter = self._handler_adapter(obj, spec)
                params = spec.params
            if obj.adapter is None:
                continue
            model = self._params(obj, obj.adapter, params)
            if model is not None:
                handlers[obj.fq_name] = HandlerConfig(
                    obj.fq_name, obj.namespace, obj.adapter.name, model, obj.source
                )
        return handlers

    def _oop_handler(
        self, obj: DeclaredObject, spec: HandlerSpec, handlers: dict[str, HandlerConfig]
    ) -> None:
        def report(path: str, message: str) -> None:
            self._error(obj, join_path(obj.spec_path, path), message)

        assert spec.connection is not None
        info, params = self.oop.handler(
            obj.name,
            obj.namespace,
            self.default_namespace,
            spec.adapter or spec.compiledAdapter,
            spec.connection,
            spec.params,
            report,
        )
        if info is None:
            return
        obj.adapter = info
        handlers[obj.fq_name] = HandlerConfig(obj.fq_name, obj.namespace, info.name, params, obj.source)

    def _oop_value_types(
        self, handlers: dict[str, HandlerConfig], instances: dict[str, InstanceConfig]
    ) -> dict[str, HandlerConfig]:
        """Out-of-process handlers learn the static type of each field of the instances they may
        receive: a DNS name and a string are both ``str`` at run time but differ on the wire."""
        types = {
            name: value_types(instance.builder)
            for name, instance in instances.items()
            if isinstance(instance.builder, CompiledInstanceBuilder)
        }
        result = dict(handlers)
        for name, handler in handlers.items():
            if handler.adapter.startswith(OOP_PREFIX):
                templates = getattr(handler.params, "templates", {})
                relevant = {k: v for k, v in types.items() if instances[k].template in templates}
                wire = {k: _wire_name(instances[k]) for k in relevant}
                params = handler.params.model_copy(update={"value_types": relevant, "wire_names": wire})
                result[name] = dataclasses.replace(handler, params=params)
        return result

    def _handler_adapter(self, obj: DeclaredObject, spec: HandlerSpec) -> AdapterInfo | None:
        path = obj.spec_path
        if spec.adapter and not spec.compiledAdapter:
            self._error(
                obj,
                join_path(path, "adapter"),
                "out-of-process adapters need a connection (adapter + connection); "
                "use compiledAdapter with an installed adapter",
            )
            return None
        if not spec.compiledAdapter:
            self._error(obj, join_path(path, "compiledAdapter"), "required field is missing")
            return None
        # Istio's 1.1+ configs name compiled adapters by their Mixer names, which are the legacy
        # kinds (``compiledAdapter: listchecker`` for the list adapter).
        adapter = self.registry.adapter(spec.compiledAdapter) or self.registry.adapter_for_kind(
            spec.compiledAdapter
        )
        if adapter is None:
            names = sorted(self.registry.adapters)
            self._error(
                obj,
                join_path(path, "compiledAdapter"),
                f'unknown adapter "{spec.compiledAdapter}"{did_you_mean(spec.compiledAdapter, names)} '
                f"(installed: {', '.join(names) or 'none'})",
            )
        return adapter

    def _params(self, obj: DeclaredObject, adapter: AdapterInfo, params: Any) -> BaseModel | None:
        path = obj.params_path
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            self._error(obj, path, f"expected a mapping of adapter params, got {describe_value(params)}")
            return None
        try:
            return adapter.config_model.model_validate(params)
        except ValidationError as exc:
            self._validation_errors(obj, path, exc)
            return None


def _wire_name(instance: InstanceConfig) -> str:
    """Mixer 1.1+ named an instance ``name.instance.namespace`` (the legacy form kept its kind)."""
    legacy_suffix = f".{instance.template}.{instance.namespace}"
    suffix = f".{instance.namespace}"
    if instance.name.endswith(legacy_suffix) or not instance.name.endswith(suffix):
        return instance.name
    return f"{instance.name[: -len(suffix)]}.instance.{instance.namespace}"
