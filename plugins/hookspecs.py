"""The plugin contract: every hook a Mesh Mixer plugin may implement.

A plugin is a module (or any object) with functions marked ``@mixer.hookimpl`` whose names are
hook names below. Built-in adapters (``adapters.*``) are plugins exactly like third-party
distributions that advertise an entry point in the ``mixer.adapters`` group.

Hooks register things; they never sit on the hot path. Check, Quota and Report calls go straight
from the dispatcher to the handlers that adapters build, never through ``pluggy``.

Calling convention (applies to every hook unless its docstring says otherwise):

* Every implementation is called, one plugin at a time, so that whatever a plugin returns or
  raises is attributed to that plugin (its name and origin appear in errors and listings).
  Registration hooks are called in plugin registration order: built-ins first, then entry
  points. ``hookwrapper``/``wrapper`` implementations are not supported.
* An implementation may accept any subset of a hook's parameters, by name.
* No hook is ``firstresult`` and none is historic.

Phases:

1. **Registration** (``mixer_register_*``): called each time the plugin manager builds a
   :class:`mixer.registry.Registry`: at start-up and again on each config reload. Return
   descriptions only; importing heavy client libraries or touching the network belongs in the
   handlers that factories build, not here.
2. **Lifecycle** (``mixer_startup``, ``mixer_shutdown``): server notifications, called once each
   by the server through :meth:`plugins.manager.MixerPluginManager.startup` and
   :meth:`~plugins.manager.MixerPluginManager.shutdown`.
"""

from __future__ import annotations

from collections.abc import Awaitable

import pluggy

from mixer import PROJECT_NAME, AdapterInfo
from mixer.plans import KeyStoreInfo
from mixer.registry import Registry
from mixer.templates import TemplateSpec

#: Marks the hook specifications below; plugins use :data:`mixer.hookimpl` for implementations.
hookspec = pluggy.HookspecMarker(PROJECT_NAME)

# ---------------------------------------------------------------------------------------------
# Registration phase
# ---------------------------------------------------------------------------------------------


@hookspec
def mixer_register_adapters() -> list[AdapterInfo]:
    """Describe the adapters this plugin provides.

    A plugin with one adapter need not implement this hook: it declares the adapter as its
    module attribute ``ADAPTER`` instead, which the manager reads for plugins that do not
    implement it (see :mod:`plugins.manager`).

    Each :class:`~mixer.AdapterInfo` names the adapter, its pydantic config model (unknown keys
    forbidden, every field defaulted, no side effects on construction), the factory that builds a
    handler from a config validated as that model, the templates it supports, its stability and
    version and the legacy (Istio 1.0) ``kind:`` names it answers to. Leave ``origin`` empty: the
    plugin manager sets it to ``"builtin"`` or to the providing distribution's name and version.

    Adapter names are global: a name registered by two plugins is an error naming both origins.
    An adapter named in ``MIXER_BLOCK_PLUGINS`` is dropped.

    :returns: the adapters this plugin provides, possibly none.
    """
    return []


@hookspec
def mixer_register_templates() -> list[TemplateSpec]:
    """Describe the templates this plugin provides.

    The built-in templates (metric, logentry, tracespan, quota, listentry, ...) are registered
    through this hook by ``plugins.builtin_templates``. Template names are global: a name
    registered twice is an error, and an adapter that names a template nobody registered is
    rejected when the registry is built.

    :returns: the templates this plugin provides, possibly none.
    """
    return []


@hookspec
def mixer_register_key_stores() -> list[KeyStoreInfo]:
    """Describe the API key stores this plugin provides, for plan handlers' ``subjects.keys.store``.

    Each :class:`~mixer.plans.KeyStoreInfo` names the store, its pydantic params model (unknown
    keys forbidden) and a factory ``(params, logger) -> KeyStore`` that builds a store without
    touching the network (``KeyStore.start`` connects). Leave ``origin`` empty: the plugin
    manager sets it. Key store names are global: a name registered twice is an error naming both
    origins.

    :returns: the key stores this plugin provides, possibly none.
    """
    return []


# ---------------------------------------------------------------------------------------------
# Lifecycle phase
# ---------------------------------------------------------------------------------------------


@hookspec
def mixer_startup(registry: Registry) -> Awaitable[None] | None:
    """The server has built its first runtime and is about to serve.

    Called once per server process, after the adapters' handlers have started and before the
    servers accept traffic. An implementation may return an awaitable, which is awaited before
    the next plugin is notified. An exception fails the start of the server and names the plugin.

    :param registry: the registry the running config was validated against.
    :returns: ``None``, or an awaitable to wait for.
    """


@hookspec
def mixer_shutdown(timeout: float) -> Awaitable[None] | None:
    """The server is stopping: it no longer accepts traffic and has shut its handlers down.

    Called once, in the reverse of registration order. Implementations share one deadline:
    an awaitable still pending after ``timeout`` seconds is cancelled. Exceptions are logged
    with the plugin's name and do not keep other plugins from being notified.

    :param timeout: seconds left for every plugin's shutdown together.
    :returns: ``None``, or an awaitable to wait for.
    """
