"""The compiled RBAC policy: who holds which roles, and whether a role allows an action.

Built once per handler. A decision looks the subject's roles up through indexes on exact users
and exact groups (plus the few subjects given by pattern or properties), then tries only those
roles' rules; nothing is parsed or compiled per request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapters.rbac._config import AccessRule, BindingSubject, RbacConfig
from adapters.rbac._patterns import Patterns


@dataclass(frozen=True, slots=True)
class Request:
    """One authorization question, with ``groups`` already split."""

    user: str
    groups: tuple[str, ...]
    subject_properties: Mapping[str, Any]
    namespace: str | None
    service: str | None
    method: str | None
    path: str | None
    action_properties: Mapping[str, Any]


class _Rule:
    __slots__ = ("_constraints", "_methods", "_namespaces", "_paths", "_services")

    def __init__(self, rule: AccessRule) -> None:
        self._namespaces = Patterns(rule.namespaces)
        self._services = Patterns(rule.services)
        self._methods = Patterns(rule.methods)
        self._paths = Patterns(rule.paths)
        self._constraints = tuple((c.key, Patterns(c.values)) for c in rule.constraints)

    def allows(self, request: Request) -> bool:
        return (
            self._methods.matches(request.method)
            and self._paths.matches(request.path)
            and self._services.matches(request.service)
            and self._namespaces.matches(request.namespace)
            and all(
                patterns.matches(_text(request.action_properties.get(key)))
                for key, patterns in self._constraints
            )
        )


class _Subject:
    __slots__ = ("_group", "_properties", "_user", "roles")

    def __init__(self, subject: BindingSubject, roles: tuple[str, ...]) -> None:
        self._user = Patterns([subject.user]) if subject.user is not None else None
        self._group = Patterns([subject.group]) if subject.group is not None else None
        self._properties = tuple((key, Patterns([value])) for key, value in subject.properties.items())
        self.roles = roles

    def matches(self, request: Request) -> bool:
        if self._user is not None and not self._user.matches(request.user):
            return False
        if self._group is not None and not any(self._group.matches(g) for g in request.groups):
            return False
        return all(
            patterns.matches(_text(request.subject_properties.get(key))) for key, patterns in self._properties
        )


class Policy:
    """Roles and bindings of one handler, indexed."""

    def __init__(self, config: RbacConfig) -> None:
        self._rules: dict[str, tuple[_Rule, ...]] = {
            role.name: tuple(_Rule(rule) for rule in role.rules) for role in config.roles
        }
        by_user: dict[str, list[_Subject]] = {}
        by_group: dict[str, list[_Subject]] = {}
        general: list[_Subject] = []
        for binding in config.bindings:
            for subject in binding.subjects:
                compiled = _Subject(subject, (binding.role,))
                # An exact user (or, without one, an exact group) is a dict key; the rest is
                # checked in full once the key is found.
                if subject.user is not None and "*" not in subject.user:
                    by_user.setdefault(subject.user, []).append(compiled)
                elif subject.user is None and subject.group is not None and "*" not in subject.group:
                    by_group.setdefault(subject.group, []).append(compiled)
                else:
                    general.append(compiled)
        self._by_user = {user: tuple(found) for user, found in by_user.items()}
        self._by_group = {group: tuple(found) for group, found in by_group.items()}
        self._general = tuple(general)

    def roles_of(self, request: Request) -> list[str]:
        """The roles bound to the request's subject, in binding order, without repeats."""
        candidates: list[_Subject] = list(self._by_user.get(request.user, ()))
        for group in request.groups:
            candidates.extend(self._by_group.get(group, ()))
        candidates.extend(self._general)
        roles: dict[str, None] = {}
        for subject in candidates:
            if subject.matches(request):
                roles.update(dict.fromkeys(subject.roles))
        return list(roles)

    def allowing_role(self, request: Request) -> str | None:
        """The first role of the subject that allows the action, or None (denied)."""
        for role in self.roles_of(request):
            if any(rule.allows(request) for rule in self._rules[role]):
                return role
        return None


def split_groups(groups: str | None) -> tuple[str, ...]:
    """``"dev, ops"`` -> ``("dev", "ops")``: the template's groups are one string, as a JWT
    ``groups`` list arrives in ``request.auth.claims``."""
    if not groups:
        return ()
    return tuple(g for g in (part.strip() for part in groups.split(",")) if g)


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def describe(request: Request) -> str:
    """``user "alice" (groups: dev) may not GET /admin on service web in namespace shop``."""
    who = f'user "{request.user}"' if request.user else "an unauthenticated caller"
    if request.groups:
        who += f" (groups: {', '.join(request.groups)})"
    what = " ".join(part for part in (request.method, request.path) if part) or "act"
    where: list[str] = []
    if request.service:
        where.append(f"on service {request.service}")
    if request.namespace:
        where.append(f"in namespace {request.namespace}")
    return " ".join([who, "may not", what, *where])
