"""``rbac``: role-based access control on ``authorization`` instances (Mixer's ``rbac`` adapter).

Roles say which actions (namespace, service, method, path, properties) are allowed; bindings give
roles to subjects (users, groups, properties). Allow-list: what no role allows is
PERMISSION_DENIED. Roles and bindings are inline in the params. See README.md.
"""

from __future__ import annotations

from pydantic import BaseModel

from adapters.rbac._config import AccessRule, Binding, BindingSubject, Constraint, RbacConfig, Role
from mixer import AdapterInfo, Handler, HandlerEnv, Stability, __version__, hookimpl

__all__ = [
    "ADAPTER",
    "AccessRule",
    "Binding",
    "BindingSubject",
    "Constraint",
    "RbacConfig",
    "Role",
    "build_handler",
    "mixer_register_adapters",
]


def build_handler(config: BaseModel, env: HandlerEnv) -> Handler:
    from adapters.rbac._handler import RbacHandler

    if not isinstance(config, RbacConfig):
        raise TypeError(f"rbac needs an RbacConfig, got {type(config).__name__}")
    return RbacHandler(config)


ADAPTER = AdapterInfo(
    name="rbac",
    description="Role-based access control: allows what a role bound to the caller allows, denies the rest",
    templates=frozenset({"authorization"}),
    config_model=RbacConfig,
    factory=build_handler,
    stability=Stability.BETA,
    version=__version__,
    legacy_kinds=("rbac",),
)


@hookimpl
def mixer_register_adapters() -> list[AdapterInfo]:
    return [ADAPTER]
