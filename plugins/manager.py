"""The plugin manager: built-in adapters, entry-point plugins and the block list.

Build one with :func:`create_plugin_manager` (an app factory: nothing is loaded at import time,
so every test and every ``mixer`` command gets a fresh manager). Built-in adapters are the
modules in :data:`BUILTIN_ADAPTERS` and go through the same hooks as third-party plugins found in
the ``mixer.adapters`` entry-point group.

A plugin provides its adapter by declaring it as the module attribute ``ADAPTER`` (what every
built-in does), or by implementing ``mixer_register_adapters`` to provide several or choose them
at registration; a plugin that implements the hook is not read for ``ADAPTER``.

Loading imports each plugin's top-level module once, because registration needs every
:class:`~mixer.AdapterInfo` (its config model and templates). Adapters keep that import light by
importing their client libraries inside the factory, so a handler's dependencies load only when
config names the adapter.

With :data:`TRACE_ENV_VAR` set, every call of a plugin's hook implementation is logged with the
plugin's name and how long it took (awaiting included).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import inspect
import logging
import os
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar

import pluggy

from mixer import PROJECT_NAME, AdapterInfo, Stability, __version__
from mixer.plans import KeyStoreInfo
from mixer.registry import Registry, RegistryError
from mixer.templates import TemplateSpec
from plugins import hookspecs

__all__ = [
    "ADAPTER_ATTRIBUTE",
    "BLOCK_ENV_VAR",
    "BUILTIN_ADAPTERS",
    "BUILTIN_ORIGIN",
    "CORE_PLUGINS",
    "ENTRY_POINT_GROUP",
    "TRACE_ENV_VAR",
    "AdapterListing",
    "MixerPluginManager",
    "PluginError",
    "blocked_from_env",
    "create_plugin_manager",
    "list_adapters",
    "tracing_from_env",
]

logger = logging.getLogger("mixer.plugins")

#: Comma-separated plugin names (entry-point names, module names) or adapter names not to load.
BLOCK_ENV_VAR = "MIXER_BLOCK_PLUGINS"
#: Set to ``1`` (or ``true``, ``yes``, ``on``) to log every hook call with its plugin and duration.
TRACE_ENV_VAR = "MIXER_TRACE_HOOKS"
#: The entry-point group third-party adapter distributions advertise their plugin module in.
ENTRY_POINT_GROUP = "mixer.adapters"
#: The module attribute a plugin declares its adapter in, instead of implementing the hook.
ADAPTER_ATTRIBUTE = "ADAPTER"
#: Its former name, still read for one release with a DeprecationWarning.
DEPRECATED_ADAPTER_ATTRIBUTE = "ADAPTER_INFO"
#: The origin of everything registered by modules shipped with Mesh Mixer.
BUILTIN_ORIGIN = "builtin"

#: Built-in adapter modules, each a plugin declaring its :data:`ADAPTER_ATTRIBUTE`.
#: A module is blocked by its full name (``adapters.stdio``) or its last part (``stdio``).
BUILTIN_ADAPTERS: tuple[str, ...] = (
    "adapters.stdio",
    "adapters.denier",
    "adapters.list",
    "adapters.noop",
    "adapters.prometheus",
    "adapters.memquota",
    "adapters.redisquota",
    "adapters.jwt",
    "adapters.rbac",
    "adapters.otlp",
    "adapters.zipkin",
    "adapters.elasticsearch",
    "adapters.kafka",
    "adapters.kubernetesenv",
    "adapters.fluentd",
)

#: Always loaded and never blocked: without them no config can be validated.
CORE_PLUGINS: tuple[str, ...] = ("plugins.builtin_templates",)

_T = TypeVar("_T")


class PluginError(Exception):
    """A plugin failed to import, to validate against the hook specs or to answer a hook.

    The message names the plugin and where it came from, and says how to start without it.
    """


def blocked_from_env(environ: dict[str, str] | None = None) -> frozenset[str]:
    """The names in :data:`BLOCK_ENV_VAR`, split on commas, blanks ignored."""
    raw = (os.environ if environ is None else environ).get(BLOCK_ENV_VAR, "")
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


def tracing_from_env(environ: dict[str, str] | None = None) -> bool:
    """Whether :data:`TRACE_ENV_VAR` asks for hook calls to be logged."""
    raw = (os.environ if environ is None else environ).get(TRACE_ENV_VAR, "")
    return raw.strip().lower() in {"1", "true", "yes", "on"}


class MixerPluginManager(pluggy.PluginManager):
    """A pluggy manager that knows where each plugin came from and builds the typed registry.

    :param blocked: plugin names, module names and adapter names not to load or register.
    :param trace_hooks: log every call of a hook implementation with its plugin and duration.
    """

    def __init__(self, blocked: Iterable[str] = (), *, trace_hooks: bool = False) -> None:
        super().__init__(PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.blocked_names: frozenset[str] = frozenset(blocked)
        for name in self.blocked_names:
            self.set_blocked(name)
        self.trace_hooks = trace_hooks
        self._origins: dict[str, str] = {}
        self._versions: dict[str, str] = {}
        self._shut_down = False

    # -- loading -------------------------------------------------------------------------------

    def register_plugin(self, plugin: object, name: str, origin: str, version: str = "") -> None:
        """Register ``plugin`` under ``name``, remembering its ``origin`` for errors and listings,
        and its distribution's ``version`` for the adapters that do not state their own.

        :raises PluginError: the name is taken or the plugin's hooks do not match the specs.
        """
        try:
            self.register(plugin, name=name)
        except (ValueError, pluggy.PluginValidationError) as exc:
            raise PluginError(f"plugin {name!r} ({origin}) could not be registered: {exc}") from exc
        self._origins[name] = origin
        self._versions[name] = version

    def load_modules(self, modules: Iterable[str], *, origin: str = BUILTIN_ORIGIN) -> None:
        """Import and register each module named, unless blocked by its full or last name.

        :raises PluginError: a module failed to import.
        """
        for module_name in modules:
            if self._is_blocked(module_name, module_name.rpartition(".")[2]):
                logger.info("plugin %s is blocked by %s", module_name, BLOCK_ENV_VAR)
                continue
            try:
                module = importlib.import_module(module_name)
            except Exception as exc:
                raise PluginError(_load_failure(module_name, origin, exc)) from exc
            self.register_plugin(module, module_name, origin, __version__ if origin == BUILTIN_ORIGIN else "")

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        """Load and register the plugins advertised in entry-point ``group``.

        An entry point is skipped when its name or its module is blocked.

        :raises PluginError: a plugin failed to import.
        """
        for ep in sorted(entry_points(group=group), key=lambda ep: ep.name):
            if self._is_blocked(ep.name, ep.module):
                logger.info("plugin %s (%s) is blocked by %s", ep.name, ep.value, BLOCK_ENV_VAR)
                continue
            origin = _entry_point_origin(ep)
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(_load_failure(ep.name, origin, exc)) from exc
            self.register_plugin(plugin, ep.name, origin, ep.dist.version if ep.dist is not None else "")

    def check_hooks(self) -> None:
        """Reject ``@hookimpl`` functions that implement no hook (usually a misspelt name).

        :raises PluginError: naming the plugin and the unknown hook.
        """
        try:
            self.check_pending()
        except pluggy.PluginValidationError as exc:
            name = self.get_name(exc.plugin) or repr(exc.plugin)
            raise PluginError(f"plugin {name!r} ({self.origin_of(name)}): {exc}") from exc

    def origin_of(self, plugin_name: str) -> str:
        """``"builtin"`` or ``"<distribution> <version>"`` for a registered plugin's name."""
        return self._origins.get(plugin_name, plugin_name)

    # -- registration hooks ---------------------------------------------------------------------

    def registry(self) -> Registry:
        """Ask every plugin for its adapters, templates and key stores and build the typed registry.

        Call it at start-up and on each reload, never per request. Each adapter's ``origin`` is
        set to its plugin's origin; adapters named in the block list are dropped.

        :raises RegistryError: an adapter or template name registered twice (naming both
            origins), or an adapter naming a template nobody registered.
        :raises PluginError: a plugin's hook raised or returned something else than a list.
        """
        templates: dict[str, tuple[TemplateSpec, str]] = {}
        for plugin_name, result in self._collect("mixer_register_templates"):
            for spec in self._expect_list(result, TemplateSpec, plugin_name, "mixer_register_templates"):
                if spec.name in templates:
                    raise RegistryError(
                        f"template {spec.name!r} registered twice: by {self._who(templates[spec.name][1])}"
                        f" and by {self._who(plugin_name)}"
                    )
                templates[spec.name] = (spec, plugin_name)

        adapters: dict[str, tuple[AdapterInfo, str]] = {}
        for plugin_name, result in self._adapter_declarations():
            for info in self._expect_list(result, AdapterInfo, plugin_name, "mixer_register_adapters"):
                if info.name in self.blocked_names:
                    continue
                if info.name in adapters:
                    raise RegistryError(
                        f"adapter {info.name!r} registered twice: by {self._who(adapters[info.name][1])}"
                        f" and by {self._who(plugin_name)}"
                    )
                unknown = sorted(set(info.templates) - templates.keys())
                if unknown:
                    raise RegistryError(
                        f"adapter {info.name!r} from {self._who(plugin_name)} names unknown "
                        f"template(s) {', '.join(unknown)}"
                    )
                adapters[info.name] = (
                    dataclasses.replace(
                        info,
                        origin=self.origin_of(plugin_name),
                        version=info.version or self._versions.get(plugin_name) or "0.0.0",
                    ),
                    plugin_name,
                )

        key_stores: dict[str, tuple[KeyStoreInfo, str]] = {}
        for plugin_name, result in self._collect("mixer_register_key_stores"):
            for store in self._expect_list(result, KeyStoreInfo, plugin_name, "mixer_register_key_stores"):
                if store.name in key_stores:
                    raise RegistryError(
                        f"key store {store.name!r} registered twice: by "
                        f"{self._who(key_stores[store.name][1])} and by {self._who(plugin_name)}"
                    )
                key_stores[store.name] = (
                    dataclasses.replace(store, origin=self.origin_of(plugin_name)),
                    plugin_name,
                )

        return Registry.build(
            (info for info, _ in adapters.values()),
            (spec for spec, _ in templates.values()),
            (store for store, _ in key_stores.values()),
        )

    # -- lifecycle hooks ------------------------------------------------------------------------

    async def startup(self, registry: Registry) -> None:
        """Notify every plugin that the server is about to serve (``mixer_startup``).

        :raises PluginError: a plugin's hook raised; the server should not start.
        """
        for impl in self._impls("mixer_startup"):
            try:
                with self._traced("mixer_startup", impl.plugin_name):
                    result = impl.function(**_args(impl, registry=registry))
                    if inspect.isawaitable(result):
                        await result
            except Exception as exc:
                raise PluginError(f"{self._who(impl.plugin_name)} failed in mixer_startup: {exc!r}") from exc

    async def shutdown(self, timeout: float) -> None:
        """Notify every plugin, newest first, that the server is stopping (``mixer_shutdown``).

        Idempotent. All plugins share ``timeout`` seconds; a plugin that raises or overruns is
        logged and the others are still notified.
        """
        if self._shut_down:
            return
        self._shut_down = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for impl in reversed(self._impls("mixer_shutdown")):
            remaining = max(0.0, deadline - loop.time())
            try:
                with self._traced("mixer_shutdown", impl.plugin_name):
                    result = impl.function(**_args(impl, timeout=remaining))
                    if inspect.isawaitable(result):
                        await asyncio.wait_for(result, remaining)
            except TimeoutError:
                logger.warning("%s did not finish mixer_shutdown in time", self._who(impl.plugin_name))
            except Exception:
                logger.exception("%s failed in mixer_shutdown", self._who(impl.plugin_name))

    # -- internals ------------------------------------------------------------------------------

    def _is_blocked(self, *names: str) -> bool:
        return any(name in self.blocked_names for name in names)

    def _who(self, plugin_name: str) -> str:
        return f"plugin {plugin_name!r} ({self.origin_of(plugin_name)})"

    def _impls(self, hook_name: str) -> list[pluggy.HookImpl]:
        caller: pluggy.HookCaller = getattr(self.hook, hook_name)
        return caller.get_hookimpls()

    def _expect_list(self, result: object, item_type: type[_T], plugin_name: str, hook_name: str) -> list[_T]:
        if result is None:
            return []
        if not isinstance(result, list | tuple) or not all(isinstance(item, item_type) for item in result):
            raise PluginError(
                f"{self._who(plugin_name)}: {hook_name} must return a list of {item_type.__name__}, "
                f"got {result!r}"
            )
        return list(result)

    def _collect(self, hook_name: str) -> Iterator[tuple[str, object]]:
        """Call a no-argument hook one plugin at a time, so results and errors name the plugin."""
        for impl in self._impls(hook_name):
            try:
                with self._traced(hook_name, impl.plugin_name):
                    result = impl.function(**_args(impl))
            except Exception as exc:
                raise PluginError(f"{self._who(impl.plugin_name)} failed in {hook_name}: {exc!r}") from exc
            yield impl.plugin_name, result

    def _adapter_declarations(self) -> Iterator[tuple[str, object]]:
        """Each plugin's adapters, in registration order: what its ``mixer_register_adapters``
        returns or, when it implements no such hook, the adapter it declares."""
        hooked = dict(self._collect("mixer_register_adapters"))
        for name, plugin in self.list_name_plugin():
            if name in hooked:
                yield name, hooked[name]
            elif plugin is not None:  # None: a blocked name
                declared = self._declared_adapter(name, plugin)
                yield name, [] if declared is None else [declared]

    def _declared_adapter(self, plugin_name: str, plugin: object) -> AdapterInfo | None:
        declared = getattr(plugin, ADAPTER_ATTRIBUTE, None)
        attribute = ADAPTER_ATTRIBUTE
        if declared is None and getattr(plugin, DEPRECATED_ADAPTER_ATTRIBUTE, None) is not None:
            attribute = DEPRECATED_ADAPTER_ATTRIBUTE
            declared = getattr(plugin, attribute)
            warnings.warn(
                f"{self._who(plugin_name)} declares its adapter as {attribute}, which the next "
                f"release no longer reads: name it {ADAPTER_ATTRIBUTE}",
                DeprecationWarning,
                stacklevel=4,
            )
        if declared is not None and not isinstance(declared, AdapterInfo):
            raise PluginError(
                f"{self._who(plugin_name)}: {attribute} must be an AdapterInfo, got {declared!r}"
            )
        return declared

    @contextlib.contextmanager
    def _traced(self, hook_name: str, plugin_name: str) -> Iterator[None]:
        """Log the call of one plugin's implementation when tracing is on.

        The manager calls each implementation itself rather than through ``self.hook`` (so that
        results and errors name the plugin), which pluggy's own call monitoring never sees.
        """
        if not self.trace_hooks:
            yield
            return
        started = time.perf_counter()
        outcome = "raised"
        try:
            yield
            outcome = "returned"
        finally:
            logger.info(
                "hook %s of %s %s after %.3f ms",
                hook_name,
                self._who(plugin_name),
                outcome,
                (time.perf_counter() - started) * 1000,
            )


def create_plugin_manager(
    *,
    load_entry_points: bool = True,
    blocked: Iterable[str] | None = None,
    trace_hooks: bool | None = None,
) -> MixerPluginManager:
    """Build a plugin manager with the built-in adapters and, by default, entry-point plugins.

    :param load_entry_points: also load the plugins advertised in :data:`ENTRY_POINT_GROUP`.
    :param blocked: names not to load (see :data:`BLOCK_ENV_VAR`); ``None`` reads that variable.
    :param trace_hooks: log every hook call (see :data:`TRACE_ENV_VAR`); ``None`` reads that variable.
    :returns: a fresh manager; call :meth:`MixerPluginManager.registry` for what config may name.
    :raises PluginError: a plugin failed to import or does not match the hook specs.
    """
    manager = MixerPluginManager(
        blocked_from_env() if blocked is None else blocked,
        trace_hooks=tracing_from_env() if trace_hooks is None else trace_hooks,
    )
    manager.load_modules(CORE_PLUGINS)
    manager.load_modules(BUILTIN_ADAPTERS)
    if load_entry_points:
        manager.load_entry_points()
    manager.check_hooks()
    return manager


@dataclass(frozen=True, slots=True)
class AdapterListing:
    """One row of ``mixer adapters``."""

    name: str
    version: str
    templates: tuple[str, ...]
    origin: str
    stability: Stability
    description: str


def list_adapters(manager: MixerPluginManager) -> list[AdapterListing]:
    """Every registered adapter, sorted by name, for the ``mixer adapters`` command."""
    return [
        AdapterListing(
            name=info.name,
            version=info.version,
            templates=tuple(sorted(info.templates)),
            origin=info.origin,
            stability=info.stability,
            description=info.description,
        )
        for info in sorted(manager.registry().adapters.values(), key=lambda info: info.name)
    ]


def _entry_point_origin(ep: EntryPoint) -> str:
    dist = ep.dist
    if dist is None:
        return f"entry point {ep.value}"
    return f"{dist.name} {dist.version}"


def _load_failure(name: str, origin: str, exc: BaseException) -> str:
    return (
        f"plugin {name!r} ({origin}) failed to load: {type(exc).__name__}: {exc}. "
        f"Fix or uninstall it, or set {BLOCK_ENV_VAR}={name} to start without it."
    )


def _args(impl: pluggy.HookImpl, **available: Any) -> dict[str, Any]:
    # Implementations may take any subset of a hook's parameters, as with pm.hook calls.
    return {name: available[name] for name in impl.argnames}
