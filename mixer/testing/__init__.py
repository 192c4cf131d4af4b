"""What a plugin's tests need from Mesh Mixer: the adapter contract suite and input builders.

- :class:`AdapterContract`: subclass it in a test module with ``adapter = ADAPTER`` and pytest runs
  the contract every adapter must keep (unknown params rejected, defaults built without side
  effects, handler classes matching the templates, quick and idempotent ``start``/``shutdown``).
  :func:`check_adapter` runs the same checks in one call; the ``check_*`` functions one at a time.
- :func:`handler_env`, :func:`instances` and :func:`report_batch`: a factory's environment, and
  instances and report batches built from attribute dicts the way the runtime builds them.

Importing this package loads no test framework and no adapter's dependencies.
"""

from __future__ import annotations

from mixer.testing._builders import handler_env, instances, report_batch
from mixer.testing._contract import (
    LIFECYCLE_TIMEOUT,
    AdapterContract,
    build_default_handler,
    check_adapter,
    check_config_model,
    check_descriptor,
    check_handler_classes,
    check_lifecycle,
)

__all__ = [
    "LIFECYCLE_TIMEOUT",
    "AdapterContract",
    "build_default_handler",
    "check_adapter",
    "check_config_model",
    "check_descriptor",
    "check_handler_classes",
    "check_lifecycle",
    "handler_env",
    "instances",
    "report_batch",
]
