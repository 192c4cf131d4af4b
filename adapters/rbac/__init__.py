"""``rbac``: role-based access control on ``authorization`` instances (Mixer's ``rbac`` adapter).

Roles say which actions (namespace, service, method, path, properties) are allowed; bindings give
roles to subjects (users, groups, properties). Allow-list: what no role allows is
PERMISSION_DENIED. Roles and bindings are inline in the params. See README.md.
"""

from __future__ import annotations

from adapters.rbac._config import AccessRule, Binding, BindingSubject, Constraint, RbacConfig, Role
from mixer import AdapterInfo, Handler, HandlerEnv, Stability

__all__ = [
    "ADAPTER",
    "AccessRule",
    "Binding",
    "BindingSubject",
    "Constraint",
    "RbacConfig",
    "Role",
    "build_handler",
]


def build_handler(config: RbacConfig, env: HandlerEnv) -> Handler:
    from adapters.rbac._handler import RbacHandler

    return RbacHandler(config)


ADAPTER = AdapterInfo(
    name="rbac",
    description="Role-based access control: allows what a role bound to the caller allows, denies the rest",
    templates=frozenset({"authorization"}),
    config_model=RbacConfig,
    factory=build_handler,
    stability=Stability.BETA,
)
