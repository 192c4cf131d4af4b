"""The plugin system: the hook contract (:mod:`plugins.hookspecs`) and the plugin manager.

Plugins themselves import only from :mod:`mixer` (``from mixer import hookimpl, AdapterInfo``);
this package is for the server and the ``mixer`` command that load them.
"""

from __future__ import annotations

from plugins.manager import (
    BLOCK_ENV_VAR,
    BUILTIN_ADAPTERS,
    ENTRY_POINT_GROUP,
    AdapterListing,
    MixerPluginManager,
    PluginError,
    create_plugin_manager,
    list_adapters,
)

__all__ = [
    "BLOCK_ENV_VAR",
    "BUILTIN_ADAPTERS",
    "ENTRY_POINT_GROUP",
    "AdapterListing",
    "MixerPluginManager",
    "PluginError",
    "create_plugin_manager",
    "list_adapters",
]
