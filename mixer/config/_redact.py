"""The effective configuration as plain data, with secrets replaced, for display."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr
from pydantic_core import to_jsonable_python

from mixer.config._instances import CompiledInstanceBuilder
from mixer.config._model import HeaderOperationConfig, RuleConfig, SamplingConfig, ValidatedConfig
from mixer.redact import REDACTED, redact_value


def redacted(config: ValidatedConfig) -> dict[str, Any]:
    """The effective config as JSON-ready data: secrets (``SecretStr`` fields, any key named like
    a password, token, secret or API key, and passwords in URLs and other text, see
    :mod:`mixer.redact`) are replaced with ``"***"``."""
    handlers = {
        name: {
            "adapter": handler.adapter,
            "namespace": handler.namespace,
            "params": _params(handler.params),
            "source": str(handler.source),
        }
        for name, handler in sorted(config.handlers.items())
    }
    instances: dict[str, Any] = {}
    for name, instance in sorted(config.instances.items()):
        builder = instance.builder
        params = builder.expression_texts() if isinstance(builder, CompiledInstanceBuilder) else None
        instances[name] = {
            "template": instance.template,
            "namespace": instance.namespace,
            "params": params,
            "source": str(instance.source),
        }
    result = {
        "default_namespace": config.default_namespace,
        "attributes": {name: config.manifest[name].name for name in sorted(config.manifest)},
        "handlers": handlers,
        "instances": instances,
        "rules": [_rule(rule) for rule in config.rules],
    }
    scrubbed: dict[str, Any] = redact_value(result)
    return scrubbed


def _params(params: BaseModel) -> Any:
    # Python mode keeps SecretStr objects, so they can be recognised before serialisation.
    return to_jsonable_python(_secrets(params.model_dump(mode="python")))


def _secrets(value: Any) -> Any:
    if isinstance(value, SecretStr | SecretBytes):
        return REDACTED
    if isinstance(value, dict):
        return {key: _secrets(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_secrets(item) for item in value]
    return value


def _rule(rule: RuleConfig) -> dict[str, Any]:
    return {
        "name": rule.name,
        "namespace": rule.namespace,
        "match": rule.match.text if rule.match is not None else "",
        "actions": [
            {"handler": action.handler, "instances": list(action.instances), "name": action.name}
            for action in rule.actions
        ],
        "requestHeaderOperations": [_header_op(op) for op in rule.request_header_operations],
        "responseHeaderOperations": [_header_op(op) for op in rule.response_header_operations],
        "sampling": _sampling(rule.sampling),
        "source": str(rule.source),
    }


def _header_op(op: HeaderOperationConfig) -> dict[str, Any]:
    return {"name": op.name, "values": [value.text for value in op.values], "operation": op.operation.name}


def _sampling(sampling: SamplingConfig | None) -> dict[str, Any] | None:
    if sampling is None:
        return None
    duration = sampling.rate_sampling_duration
    return {
        "random_percent": sampling.random_percent,
        "random_use_independent_randomness": sampling.random_use_independent_randomness,
        "rate_sampling_rate": sampling.rate_sampling_rate,
        "rate_sampling_duration_seconds": duration.total_seconds() if duration is not None else None,
        "rate_max_unsampled_entries": sampling.rate_max_unsampled_entries,
    }
