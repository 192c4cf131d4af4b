"""The plugin manager: built-ins, entry points, the block list, the registry and lifecycle hooks."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import subprocess
import sys
import types
from importlib.metadata import EntryPoint
from pathlib import Path

import pydantic
import pytest

import mixer
from mixer import AdapterInfo, Stability, hookimpl, lazy_factory
from mixer.registry import Registry, RegistryError
from mixer.templates import BUILTIN_TEMPLATES, PLAN_TEMPLATES, TemplateSpec
from mixer.testing import handler_env
from plugins import manager as manager_module
from plugins.manager import (
    BLOCK_ENV_VAR,
    BUILTIN_ADAPTERS,
    ENTRY_POINT_GROUP,
    TRACE_ENV_VAR,
    AdapterListing,
    MixerPluginManager,
    PluginError,
    blocked_from_env,
    create_plugin_manager,
    list_adapters,
    tracing_from_env,
)
from tests.plugins._sample_plugin import SampleConfig, adapter

_BUILTIN_NAMES = {"stdio", "denier", "list", "noop"}


@pytest.fixture(autouse=True)
def _no_block_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BLOCK_ENV_VAR, raising=False)
    monkeypatch.delenv(TRACE_ENV_VAR, raising=False)


def _fake_entry_points(monkeypatch: pytest.MonkeyPatch, *eps: EntryPoint) -> None:
    def entry_points(*, group: str) -> list[EntryPoint]:
        assert group == ENTRY_POINT_GROUP
        return list(eps)

    monkeypatch.setattr(manager_module, "entry_points", entry_points)


def _plugin(*infos: AdapterInfo) -> object:
    class Plugin:
        @staticmethod
        @hookimpl
        def mixer_register_adapters() -> list[AdapterInfo]:
            return list(infos)

    return Plugin()


# -- built-ins and the registry -------------------------------------------------------------------


def test_builtins_are_registered_by_their_declarations() -> None:
    pm = create_plugin_manager(load_entry_points=False)
    for module_name in BUILTIN_ADAPTERS:
        assert pm.has_plugin(module_name)
    registry = pm.registry()
    assert set(registry.adapters) >= _BUILTIN_NAMES
    for name in _BUILTIN_NAMES:
        info = registry.adapters[name]
        assert info.origin == "builtin"
        assert info.version == mixer.__version__


def test_registry_contents() -> None:
    registry = create_plugin_manager(load_entry_points=False).registry()
    assert isinstance(registry, Registry)
    builtin = {spec.name for spec in (*BUILTIN_TEMPLATES, *PLAN_TEMPLATES)}
    # requestauth and kubernetes are registered by the jwt and kubernetesenv adapters' modules,
    # the way a third-party template is.
    assert set(registry.templates) == builtin | {"requestauth", "kubernetes"}
    assert registry.adapter_for_kind("listchecker") is registry.adapters["list"]
    assert registry.adapter_for_kind("stdio") is registry.adapters["stdio"]
    assert registry.adapters["stdio"].templates == {"logentry", "metric"}
    assert registry.adapters["denier"].templates == {"checknothing", "listentry", "quota"}
    assert registry.adapters["noop"].templates == {spec.name for spec in BUILTIN_TEMPLATES}


def test_each_call_builds_a_fresh_manager() -> None:
    first = create_plugin_manager(load_entry_points=False)
    second = create_plugin_manager(load_entry_points=False)
    assert first is not second
    first.register_plugin(_plugin(adapter("only-in-first")), "extra", "test")
    assert "only-in-first" not in second.registry().adapters


def test_list_adapters_for_the_cli() -> None:
    listings = list_adapters(create_plugin_manager(load_entry_points=False))
    assert [item.name for item in listings] == sorted(item.name for item in listings)
    by_name = {item.name: item for item in listings}
    assert by_name["list"] == AdapterListing(
        name="list",
        version=mixer.__version__,
        templates=("listentry",),
        origin="builtin",
        stability=Stability.STABLE,
        description=by_name["list"].description,
    )
    assert by_name["noop"].stability is Stability.DEVELOPMENT


# -- declared adapters ------------------------------------------------------------------------------


def _module(name: str, **attributes: object) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


def test_a_declared_adapter_is_registered_with_its_plugins_origin() -> None:
    pm = create_plugin_manager(load_entry_points=False)
    pm.register_plugin(_module("declaring", ADAPTER=adapter("declared")), "declaring", "declaring-dist 1")
    info = pm.registry().adapters["declared"]
    assert info.origin == "declaring-dist 1"
    assert info.version == "9.9"


def test_an_adapter_without_a_version_gets_its_distributions() -> None:
    unversioned = dataclasses.replace(adapter("unversioned"), version="")
    pm = create_plugin_manager(load_entry_points=False)
    pm.register_plugin(_module("plain", ADAPTER=unversioned), "plain", "plain-dist 3.1", "3.1")
    pm.register_plugin(_module("anonymous", ADAPTER=adapter("versioned")), "anonymous", "somewhere")
    registry = pm.registry()
    assert registry.adapters["unversioned"].version == "3.1"
    assert registry.adapters["versioned"].version == "9.9"
    assert all(registry.adapters[name].version == mixer.__version__ for name in _BUILTIN_NAMES)


def test_a_lazy_factory_imports_its_handler_at_the_first_build(tmp_path: Path) -> None:
    factory = lazy_factory("tests.plugins._lazy_target:Built")
    assert "tests.plugins._lazy_target" not in sys.modules
    handler = factory(SampleConfig(), handler_env(data_dir=tmp_path))
    assert type(handler).__name__ == "Built"
    assert "tests.plugins._lazy_target" in sys.modules


def test_a_plugin_implementing_the_hook_is_not_read_for_a_declaration() -> None:
    class Both:
        ADAPTER = adapter("declared-only")

        @staticmethod
        @hookimpl
        def mixer_register_adapters() -> list[AdapterInfo]:
            return [adapter("hooked-a"), adapter("hooked-b")]

    pm = create_plugin_manager(load_entry_points=False)
    pm.register_plugin(Both(), "both", "both-dist 1")
    adapters = pm.registry().adapters
    assert {"hooked-a", "hooked-b"} <= adapters.keys()
    assert "declared-only" not in adapters


def test_the_former_declaration_name_is_read_with_a_deprecation_warning() -> None:
    pm = create_plugin_manager(load_entry_points=False)
    pm.register_plugin(_module("old", ADAPTER_INFO=adapter("old-style")), "old", "old-dist 1")
    with pytest.warns(
        DeprecationWarning, match=r"'old' \(old-dist 1\) declares .* ADAPTER_INFO.*name it ADAPTER"
    ):
        adapters = pm.registry().adapters
    assert adapters["old-style"].origin == "old-dist 1"


def test_a_declaration_that_is_no_adapter_info_is_named() -> None:
    pm = create_plugin_manager(load_entry_points=False)
    pm.register_plugin(_module("wrong", ADAPTER="stdio"), "wrong", "wrong-dist 1")
    with pytest.raises(PluginError, match=r"'wrong' \(wrong-dist 1\): ADAPTER must be an AdapterInfo"):
        pm.registry()


def test_a_declared_adapter_is_blocked_by_name() -> None:
    pm = create_plugin_manager(load_entry_points=False, blocked=["declared"])
    pm.register_plugin(_module("declaring", ADAPTER=adapter("declared")), "declaring", "declaring-dist 1")
    assert "declared" not in pm.registry().adapters


def test_a_wrong_config_type_is_refused_before_the_factory_runs() -> None:
    calls: list[object] = []

    class Params(pydantic.BaseModel):
        pass

    class OtherParams(pydantic.BaseModel):
        pass

    def factory(config: Params, env: mixer.HandlerEnv) -> mixer.Handler:
        calls.append(config)
        return mixer.Handler()

    info = AdapterInfo("typed", "typed for tests", frozenset({"metric"}), Params, factory)
    env = mixer.HandlerEnv("typed.test", logging.getLogger("test"))
    assert isinstance(info.build(Params(), env), mixer.Handler)
    with pytest.raises(TypeError, match="adapter 'typed' needs Params params, got OtherParams"):
        info.build(OtherParams(), env)
    assert len(calls) == 1


# -- block list -------------------------------------------------------------------------------------


@pytest.mark.parametrize("blocked", ["stdio", "adapters.stdio"])
def test_block_builtin_by_short_or_module_name(blocked: str) -> None:
    pm = create_plugin_manager(load_entry_points=False, blocked=[blocked])
    assert not pm.has_plugin("adapters.stdio")
    assert "stdio" not in pm.registry().adapters
    assert "denier" in pm.registry().adapters


def test_block_list_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BLOCK_ENV_VAR, " list, noop ,,")
    assert blocked_from_env() == {"list", "noop"}
    adapters = create_plugin_manager(load_entry_points=False).registry().adapters
    assert "list" not in adapters
    assert "noop" not in adapters
    assert "stdio" in adapters


def test_explicit_block_list_replaces_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BLOCK_ENV_VAR, "stdio")
    assert "stdio" in create_plugin_manager(load_entry_points=False, blocked=()).registry().adapters


def test_block_one_adapter_of_a_plugin() -> None:
    pm = create_plugin_manager(load_entry_points=False, blocked=["beta"])
    pm.register_plugin(_plugin(adapter("alpha"), adapter("beta")), "pair", "pair-dist 1.0")
    adapters = pm.registry().adapters
    assert adapters["alpha"].origin == "pair-dist 1.0"
    assert "beta" not in adapters


# -- entry points -----------------------------------------------------------------------------------

_SAMPLE_EP = EntryPoint(name="sample-ep", value="tests.plugins._sample_plugin", group=ENTRY_POINT_GROUP)


def test_entry_point_plugins_are_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_entry_points(monkeypatch, _SAMPLE_EP)
    pm = create_plugin_manager()
    assert pm.has_plugin("sample-ep")
    info = pm.registry().adapters["sample"]
    assert info.origin == "entry point tests.plugins._sample_plugin"
    assert info.version == "9.9"


@pytest.mark.parametrize("blocked", ["sample-ep", "tests.plugins._sample_plugin", "sample"])
def test_entry_point_blocked_by_name_module_or_adapter(monkeypatch: pytest.MonkeyPatch, blocked: str) -> None:
    _fake_entry_points(monkeypatch, _SAMPLE_EP)
    monkeypatch.setenv(BLOCK_ENV_VAR, blocked)
    assert "sample" not in create_plugin_manager().registry().adapters


def test_entry_points_can_be_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_entry_points(monkeypatch, _SAMPLE_EP)
    assert "sample" not in create_plugin_manager(load_entry_points=False).registry().adapters


def test_plugin_that_fails_to_import_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = EntryPoint(name="broken", value="tests.plugins._no_such_module", group=ENTRY_POINT_GROUP)
    _fake_entry_points(monkeypatch, broken)
    with pytest.raises(PluginError) as caught:
        create_plugin_manager()
    message = str(caught.value)
    assert "'broken'" in message
    assert "ModuleNotFoundError" in message
    assert f"{BLOCK_ENV_VAR}=broken" in message
    # The way out the message offers works.
    assert "stdio" in create_plugin_manager(blocked=["broken"]).registry().adapters


def test_builtin_that_fails_to_import_is_named() -> None:
    pm = MixerPluginManager()
    with pytest.raises(PluginError, match=r"'adapters.no_such_adapter'.*builtin"):
        pm.load_modules(["adapters.no_such_adapter"])


def test_misspelt_hook_is_rejected() -> None:
    class Misspelt:
        @staticmethod
        @hookimpl
        def mixer_register_adapter() -> list[AdapterInfo]:
            return []

    pm = create_plugin_manager(load_entry_points=False)
    pm.register_plugin(Misspelt(), "misspelt", "typo-dist 0.1")
    with pytest.raises(PluginError, match=r"'misspelt' \(typo-dist 0.1\).*mixer_register_adapter"):
        pm.check_hooks()


def test_hook_with_unknown_argument_is_rejected() -> None:
    class Wrong:
        @staticmethod
        @hookimpl
        def mixer_startup(registry: Registry, extra: int) -> None:
            return None

    pm = MixerPluginManager()
    with pytest.raises(PluginError, match="'wrong'"):
        pm.register_plugin(Wrong(), "wrong", "wrong-dist 1")


# -- registration errors ----------------------------------------------------------------------------


def test_duplicate_adapter_names_both_origins() -> None:
    pm = create_plugin_manager(load_entry_points=False)
    pm.register_plugin(_plugin(adapter("stdio")), "impostor", "impostor-dist 2.0")
    with pytest.raises(RegistryError) as caught:
        pm.registry()
    message = str(caught.value)
    assert "'stdio'" in message
    assert "'adapters.stdio' (builtin)" in message
    assert "'impostor' (impostor-dist 2.0)" in message


def test_duplicate_template_names_are_rejected() -> None:
    class Templates:
        @staticmethod
        @hookimpl
        def mixer_register_templates() -> list[TemplateSpec]:
            return [BUILTIN_TEMPLATES[0]]

    pm = create_plugin_manager(load_entry_points=False)
    pm.register_plugin(Templates(), "templates-again", "t-dist 1")
    with pytest.raises(RegistryError, match=f"template '{BUILTIN_TEMPLATES[0].name}' registered twice"):
        pm.registry()


def test_adapter_naming_an_unknown_template_is_rejected() -> None:
    pm = create_plugin_manager(load_entry_points=False)
    pm.register_plugin(_plugin(adapter("odd", frozenset({"nosuchtemplate"}))), "odd", "odd-dist 1")
    with pytest.raises(RegistryError, match=r"'odd'.*nosuchtemplate"):
        pm.registry()


def test_hook_returning_garbage_is_named() -> None:
    class Garbage:
        @staticmethod
        @hookimpl
        def mixer_register_adapters() -> object:
            return ["not an AdapterInfo"]

    pm = create_plugin_manager(load_entry_points=False)
    pm.register_plugin(Garbage(), "garbage", "garbage-dist 1")
    with pytest.raises(PluginError, match=r"'garbage'.*list of AdapterInfo"):
        pm.registry()


def test_hook_raising_is_named() -> None:
    class Raising:
        @staticmethod
        @hookimpl
        def mixer_register_adapters() -> list[AdapterInfo]:
            raise RuntimeError("boom")

    pm = create_plugin_manager(load_entry_points=False)
    pm.register_plugin(Raising(), "raising", "raising-dist 1")
    with pytest.raises(PluginError, match=r"'raising'.*boom"):
        pm.registry()


# -- lifecycle --------------------------------------------------------------------------------------


class _Recorder:
    """Plugins that record lifecycle calls into one shared list."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, object]] = []

    def sync_plugin(self, name: str) -> object:
        calls = self.calls

        class Plugin:
            @staticmethod
            @hookimpl
            def mixer_startup(registry: Registry) -> None:
                calls.append(("startup", name, registry))

            @staticmethod
            @hookimpl
            def mixer_shutdown(timeout: float) -> None:
                calls.append(("shutdown", name, timeout))

        return Plugin()

    def async_plugin(self, name: str) -> object:
        calls = self.calls

        class Plugin:
            @staticmethod
            @hookimpl
            async def mixer_startup() -> None:
                await asyncio.sleep(0)
                calls.append(("startup", name, None))

            @staticmethod
            @hookimpl
            async def mixer_shutdown() -> None:
                await asyncio.sleep(0)
                calls.append(("shutdown", name, None))

        return Plugin()


async def test_startup_and_shutdown_notify_every_plugin_in_order() -> None:
    recorder = _Recorder()
    pm = create_plugin_manager(load_entry_points=False)
    pm.register_plugin(recorder.sync_plugin("first"), "first", "test")
    pm.register_plugin(recorder.async_plugin("second"), "second", "test")
    registry = pm.registry()

    await pm.startup(registry)
    assert recorder.calls == [("startup", "first", registry), ("startup", "second", None)]

    recorder.calls.clear()
    await pm.shutdown(5.0)
    assert [(event, name) for event, name, _ in recorder.calls] == [
        ("shutdown", "second"),
        ("shutdown", "first"),
    ]
    timeout = recorder.calls[1][2]
    assert isinstance(timeout, float)
    assert 0 < timeout <= 5.0

    recorder.calls.clear()
    await pm.shutdown(5.0)
    assert recorder.calls == []


async def test_startup_failure_names_the_plugin() -> None:
    class Failing:
        @staticmethod
        @hookimpl
        async def mixer_startup() -> None:
            raise ConnectionError("backend down")

    pm = create_plugin_manager(load_entry_points=False)
    pm.register_plugin(Failing(), "failing", "failing-dist 3")
    with pytest.raises(PluginError, match=r"'failing' \(failing-dist 3\).*backend down"):
        await pm.startup(pm.registry())


async def test_shutdown_survives_failing_and_slow_plugins(caplog: pytest.LogCaptureFixture) -> None:
    recorder = _Recorder()
    cancelled = asyncio.Event()

    class Slow:
        @staticmethod
        @hookimpl
        async def mixer_shutdown() -> None:
            try:
                await asyncio.sleep(60)
            finally:
                cancelled.set()

    class Failing:
        @staticmethod
        @hookimpl
        def mixer_shutdown() -> None:
            raise RuntimeError("cannot close")

    pm = create_plugin_manager(load_entry_points=False)
    pm.register_plugin(recorder.sync_plugin("early"), "early", "test")
    pm.register_plugin(Slow(), "slow", "slow-dist 1")
    pm.register_plugin(Failing(), "failing", "failing-dist 1")
    with caplog.at_level(logging.WARNING, logger="mixer.plugins"):
        await asyncio.wait_for(pm.shutdown(0.2), 2.0)
    assert cancelled.is_set()
    assert [name for _, name, _ in recorder.calls] == ["early"]
    assert "'failing' (failing-dist 1) failed in mixer_shutdown" in caplog.text
    assert "'slow' (slow-dist 1) did not finish mixer_shutdown in time" in caplog.text


def test_registry_build_does_not_import_handler_dependencies() -> None:
    # A fresh interpreter: this one has long imported aiohttp for other tests.
    code = (
        "import sys\n"
        "from plugins.manager import create_plugin_manager\n"
        "create_plugin_manager(load_entry_points=False).registry()\n"
        "print(sorted(m for m in ('aiohttp', 'adapters.list._handler', 'adapters.stdio._handler') "
        "if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


# -- hook call tracing ------------------------------------------------------------------------------

_TRACE_LINE = re.compile(
    r"hook (\w+) of plugin '([^']+)' \(([^)]*)\) (returned|raised) after (\d+\.\d{3}) ms"
)


def _traces(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, str, str, float]]:
    found = []
    for record in caplog.records:
        match = _TRACE_LINE.fullmatch(record.getMessage())
        if match:
            hook, plugin, origin, outcome, ms = match.groups()
            found.append((hook, plugin, origin, outcome, float(ms)))
    return found


@pytest.mark.parametrize(
    ("value", "on"), [("1", True), ("true", True), (" Yes ", True), ("on", True), ("0", False), ("", False)]
)
def test_tracing_is_read_from_the_environment(value: str, on: bool) -> None:
    assert tracing_from_env({TRACE_ENV_VAR: value}) is on
    assert tracing_from_env({}) is False


def test_the_environment_turns_tracing_on(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not create_plugin_manager(load_entry_points=False).trace_hooks
    monkeypatch.setenv(TRACE_ENV_VAR, "1")
    assert create_plugin_manager(load_entry_points=False).trace_hooks
    assert not create_plugin_manager(load_entry_points=False, trace_hooks=False).trace_hooks


async def test_each_hook_call_is_logged_with_its_plugin_and_duration(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Slow:
        @staticmethod
        @hookimpl
        async def mixer_startup() -> None:
            await asyncio.sleep(0.05)

        @staticmethod
        @hookimpl
        def mixer_shutdown() -> None:
            raise RuntimeError("cannot close")

    pm = create_plugin_manager(load_entry_points=False, trace_hooks=True)
    pm.register_plugin(Slow(), "slow", "slow-dist 1")
    with caplog.at_level(logging.INFO, logger="mixer.plugins"):
        await pm.startup(pm.registry())
        await pm.shutdown(1.0)
    traces = _traces(caplog)
    assert ("mixer_register_templates", "plugins.builtin_templates", "builtin", "returned") in {
        trace[:4] for trace in traces
    }
    startup = [trace for trace in traces if trace[0] == "mixer_startup"]
    # The awaited part counts: the plugin slept 50 ms.
    assert [trace[:4] for trace in startup] == [("mixer_startup", "slow", "slow-dist 1", "returned")]
    assert startup[0][4] >= 50.0
    assert ("mixer_shutdown", "slow", "slow-dist 1", "raised") in {trace[:4] for trace in traces}


def test_no_hook_call_is_logged_without_tracing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="mixer.plugins"):
        create_plugin_manager(load_entry_points=False).registry()
    assert _traces(caplog) == []
