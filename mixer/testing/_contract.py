"""The adapter contract as checks a test suite runs: over one adapter, or every registered one.

The checks are plain functions that raise ``AssertionError``; :class:`AdapterContract` turns them
into pytest tests for a plugin's test module. Nothing here imports pytest: pytest finds the test
methods and passes the fixtures (``tmp_path``, ``monkeypatch``) by name.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from pydantic import ValidationError

from mixer.adapter import (
    AdapterInfo,
    AttributeHandler,
    CheckHandler,
    Handler,
    QuotaHandler,
    ReportHandler,
)
from mixer.templates import BUILTIN_TEMPLATES, TemplateSpec, Variety
from mixer.testing._builders import handler_env

if TYPE_CHECKING:
    import pytest


HANDLER_CLASS_BY_VARIETY: dict[Variety, type[Handler]] = {
    Variety.CHECK: CheckHandler,
    Variety.QUOTA: QuotaHandler,
    Variety.REPORT: ReportHandler,
    Variety.ATTRIBUTE_GENERATOR: AttributeHandler,
}

#: Lifecycle calls of an idle handler must return well within this many seconds.
LIFECYCLE_TIMEOUT = 2.0


def check_descriptor(info: AdapterInfo) -> None:
    """The adapter names itself, says what it is, and names templates (its version, when it does not
    state one, is its distribution's, filled in on registration)."""
    assert info.name, "an adapter needs a name"
    assert info.name == info.name.strip(), f"{info.name!r}: the name has blanks around it"
    assert info.description, f"{info.name}: no description"
    assert info.templates, f"{info.name}: no templates"
    assert info.kinds(), f"{info.name}: no kinds"


def check_config_model(info: AdapterInfo) -> None:
    """The config model forbids unknown keys and its defaults alone validate."""
    assert info.config_model.model_config.get("extra") == "forbid", (
        f"{info.name}: extra keys must be forbidden"
    )
    try:
        info.config_model.model_validate({"surely_not_a_param_of_any_adapter": 1})
    except ValidationError:
        pass
    else:
        raise AssertionError(f"{info.name}: an unknown param was accepted")
    info.config_model()


def build_default_handler(
    info: AdapterInfo, workdir: Path, params: Mapping[str, object] | None = None
) -> Handler:
    """A handler from the defaults (with ``params`` layered over them), built through the
    descriptor as the runtime builds it, asserting the factory neither wrote files in ``workdir``
    nor started threads.

    ``params`` are for what a test must not take from the defaults, such as a fixed port that
    something else on the machine may hold.
    """
    # Compare thread objects, not counts: threads left by earlier tests may end meanwhile.
    threads_before = set(threading.enumerate())
    entries_before = sorted(workdir.iterdir())
    config = info.config_model.model_validate(dict(params or {}))
    handler = info.build(config, handler_env(f"{info.name}.contract", data_dir=workdir))
    assert isinstance(handler, Handler), f"{info.name}: the factory built a {type(handler).__name__}"
    assert sorted(workdir.iterdir()) == entries_before, f"{info.name}: building a handler touched the disk"
    started = set(threading.enumerate()) - threads_before
    assert not started, f"{info.name}: building a handler started threads {started}"
    return handler


def check_handler_classes(
    info: AdapterInfo, handler: Handler, templates: Iterable[TemplateSpec] = ()
) -> None:
    """The handler implements the handler class of each of its templates' varieties.

    :param templates: the templates besides the built-in ones that the adapter may name (those
        its plugin registers).
    """
    known = {spec.name: spec for spec in (*BUILTIN_TEMPLATES, *templates)}
    for template in sorted(info.templates):
        spec = known.get(template)
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


async def check_adapter(
    info: AdapterInfo,
    workdir: Path,
    *,
    params: Mapping[str, object] | None = None,
    templates: Iterable[TemplateSpec] = (),
) -> None:
    """Every check of the contract on one adapter, in one go (see :class:`AdapterContract`)."""
    check_descriptor(info)
    check_config_model(info)
    handler = build_default_handler(info, workdir, params)
    check_handler_classes(info, handler, templates)
    await check_lifecycle(handler)


class AdapterContract:
    """The adapter contract as pytest tests: subclass it in a test module, naming the descriptor.

    ::

        from mixer.testing import AdapterContract
        from my_plugin import ADAPTER

        class TestMyAdapterContract(AdapterContract):
            adapter = ADAPTER

    Every test method runs on its own, so a failure names the part of the contract broken. The
    lifecycle test runs its own event loop: no asyncio plugin for pytest is needed.
    """

    #: The adapter under test.
    adapter: ClassVar[AdapterInfo]
    #: Params layered over the defaults (a free port instead of a fixed one, say).
    params: ClassVar[Mapping[str, object]] = {}
    #: Templates the adapter may name besides the built-in ones (those its plugin registers).
    templates: ClassVar[Sequence[TemplateSpec]] = ()

    def test_describes_itself(self) -> None:
        check_descriptor(self.adapter)

    def test_config_model_forbids_unknown_keys(self) -> None:
        check_config_model(self.adapter)

    def test_defaults_build_a_handler_without_side_effects(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        build_default_handler(self.adapter, tmp_path, self.params)

    def test_handler_implements_its_templates(self, tmp_path: Path) -> None:
        handler = build_default_handler(self.adapter, tmp_path, self.params)
        check_handler_classes(self.adapter, handler, self.templates)

    def test_start_and_idempotent_shutdown(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(tmp_path)

        async def lifecycle() -> None:
            # Built inside the loop, as the runtime builds handlers.
            await check_lifecycle(build_default_handler(self.adapter, tmp_path, self.params))

        asyncio.run(lifecycle())
