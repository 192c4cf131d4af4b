"""Checks every adapter must pass, shared by the contract suite and the third-party plugin test."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from mixer import (
    AdapterInfo,
    AttributeHandler,
    CheckHandler,
    Handler,
    HandlerEnv,
    QuotaHandler,
    ReportHandler,
)
from mixer.registry import Registry
from mixer.templates import Variety

HANDLER_CLASS_BY_VARIETY: dict[Variety, type[Handler]] = {
    Variety.CHECK: CheckHandler,
    Variety.QUOTA: QuotaHandler,
    Variety.REPORT: ReportHandler,
    Variety.ATTRIBUTE_GENERATOR: AttributeHandler,
}

#: Params layered over an adapter's defaults so that starting it binds no fixed port: tests
#: never take a port that something else on the machine may hold.
EPHEMERAL_PARAMS: dict[str, dict[str, object]] = {"prometheus": {"listen": "127.0.0.1:0"}}

#: Lifecycle calls of an idle handler must return well within this.
LIFECYCLE_TIMEOUT = 2.0


def handler_env(info: AdapterInfo, data_dir: Path) -> HandlerEnv:
    return HandlerEnv(f"{info.name}.contract", logging.getLogger(f"test.{info.name}"), data_dir)


def check_config_model(info: AdapterInfo) -> None:
    assert info.config_model.model_config.get("extra") == "forbid", (
        f"{info.name}: extra keys must be forbidden"
    )
    with pytest.raises(ValidationError):
        info.config_model.model_validate({"surely_not_a_param_of_any_adapter": 1})


def build_default_handler(info: AdapterInfo, workdir: Path) -> Handler:
    """Default config and factory, asserting neither writes files nor starts threads."""
    # Compare thread objects, not counts: threads left by earlier tests may end meanwhile.
    threads_before = set(threading.enumerate())
    entries_before = sorted(workdir.iterdir())
    info.config_model()  # the defaults alone must validate
    config: BaseModel = info.config_model.model_validate(EPHEMERAL_PARAMS.get(info.name, {}))
    handler = info.factory(config, handler_env(info, workdir))
    assert isinstance(handler, Handler)
    assert sorted(workdir.iterdir()) == entries_before, f"{info.name}: building a handler touched the disk"
    started = set(threading.enumerate()) - threads_before
    assert not started, f"{info.name}: building a handler started threads {started}"
    return handler


def check_handler_classes(info: AdapterInfo, handler: Handler, registry: Registry) -> None:
    for template in info.templates:
        spec = registry.template(template)
        assert spec is not None, f"{info.name}: unknown template {template}"
        wanted = HANDLER_CLASS_BY_VARIETY[spec.variety]
        assert isinstance(handler, wanted), f"{info.name} supports {template} but is no {wanted.__name__}"


async def check_lifecycle(handler: Handler) -> None:
    """start() returns quickly; shutdown() is idempotent, quick when idle, and leaves no task behind."""
    tasks_before = asyncio.all_tasks()
    await asyncio.wait_for(handler.start(), LIFECYCLE_TIMEOUT)
    await asyncio.wait_for(handler.shutdown(1.0), LIFECYCLE_TIMEOUT)
    await asyncio.wait_for(handler.shutdown(1.0), LIFECYCLE_TIMEOUT)
    await asyncio.sleep(0)
    leftover = {task for task in asyncio.all_tasks() - tasks_before if not task.done()}
    assert not leftover, f"tasks left running after shutdown: {leftover}"
