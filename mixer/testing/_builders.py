"""What a handler is given, built for tests: its environment, instances and report batches.

Instances are built as the runtime builds them: an instance's params (field expressions, as in
config) compiled against its template and evaluated over each record's attributes, so a test
feeds a handler exactly what a rule would send it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mixer.adapter import DeliveryAck, Handler, HandlerEnv, ReportBatch
from mixer.attributes import ISTIO_MANIFEST, AttributeBag, AttributeManifest
from mixer.config import compile_instance
from mixer.plans import KeyStoreInfo, PlanConfig
from mixer.templates import BUILTIN_TEMPLATES, Instance, TemplateSpec

__all__ = ["handler_env", "instances", "report_batch"]

#: The handler name the builders use when a test names none.
DEFAULT_HANDLER = "handler.test"
#: The instance name the builders use when a test names none.
DEFAULT_INSTANCE = "instance.test"


def handler_env(
    handler_name: str = DEFAULT_HANDLER,
    *,
    data_dir: Path | None = None,
    plans: Mapping[str, PlanConfig] | None = None,
    key_stores: Mapping[str, KeyStoreInfo] | None = None,
    previous: Handler | None = None,
    delivery_ack: DeliveryAck = "auto",
) -> HandlerEnv:
    """The environment a factory receives, with a logger named after the handler."""
    return HandlerEnv(
        handler_name=handler_name,
        logger=logging.getLogger(f"mixer.testing.{handler_name}"),
        data_dir=data_dir,
        plans=plans or {},
        key_stores=key_stores or {},
        previous=previous,
        delivery_ack=delivery_ack,
    )


def instances(
    template: str | TemplateSpec,
    params: Mapping[str, Any],
    records: Iterable[Mapping[str, Any]],
    *,
    name: str = DEFAULT_INSTANCE,
    manifest: AttributeManifest = ISTIO_MANIFEST,
) -> list[Instance]:
    """One instance of ``template`` per record, its fields computed by the expressions ``params``.

    :param template: a built-in template's name, or the spec of one a plugin registers.
    :param params: the instance's params as config writes them (``{"value": "1", "dimensions":
        {"path": "request.path"}}``): expressions over the attributes.
    :param records: each record's attributes by name (``{"request.path": "/a"}``), typed as
        ``manifest`` declares them.
    :param name: the instance's name, which handlers see.
    :raises ValueError: ``template`` is unknown or ``params`` do not compile (every problem named).
    :raises mixer.expr.EvaluationError: an expression failed on a record.
    """
    spec = template if isinstance(template, TemplateSpec) else _builtin_template(template)
    problems: list[str] = []
    builder = compile_instance(
        name, spec, params, manifest, lambda path, message: problems.append(f"{path}: {message}")
    )
    if builder is None:
        raise ValueError(f"instance {name} of template {spec.name}: " + "; ".join(problems))
    return [builder.build(AttributeBag(record)) for record in records]


def report_batch(
    template: str | TemplateSpec,
    params: Mapping[str, Any],
    records: Iterable[Mapping[str, Any]],
    *,
    handler: str = DEFAULT_HANDLER,
    name: str = DEFAULT_INSTANCE,
    manifest: AttributeManifest = ISTIO_MANIFEST,
) -> ReportBatch:
    """The batch a Report of ``records`` hands ``handler`` for one instance (see :func:`instances`)."""
    return ReportBatch(handler, instances(template, params, records, name=name, manifest=manifest))


def _builtin_template(name: str) -> TemplateSpec:
    for spec in BUILTIN_TEMPLATES:
        if spec.name == name:
            return spec
    known = ", ".join(sorted(spec.name for spec in BUILTIN_TEMPLATES))
    raise ValueError(f"no built-in template {name!r} (built-in: {known}); pass a plugin's TemplateSpec")
