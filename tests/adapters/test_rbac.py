"""rbac: roles, bindings and patterns, table-driven; config errors; the adapter in a real config."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from adapters.rbac import RbacConfig
from adapters.rbac._handler import RbacHandler
from adapters.rbac._patterns import Patterns
from mixer import CheckResult, Code
from mixer.attributes import AttributeBag, AttributeValue
from mixer.config import load_config_text
from mixer.runtime import build_runtime
from mixer.templates import Action, AuthorizationInstance, ListEntryInstance, Subject
from plugins.manager import create_plugin_manager

POLICY: dict[str, Any] = {
    "roles": [
        {
            "name": "reader",
            "rules": [
                {
                    "services": ["web", "catalog"],
                    "methods": ["GET", "HEAD"],
                    "paths": ["/api/*", "*.json", "/health"],
                }
            ],
        },
        {"name": "shop-admin", "rules": [{"namespaces": ["shop"]}]},
        {
            "name": "writer",
            "rules": [{"services": ["web"], "methods": ["POST", "PUT"], "paths": ["/api/items/*"]}],
        },
        {
            "name": "canary",
            "rules": [
                {"services": ["web"], "constraints": [{"key": "version", "values": ["v2", "canary-*"]}]}
            ],
        },
        {"name": "nothing", "rules": []},
    ],
    "bindings": [
        {"role": "reader", "subjects": [{"user": "*"}]},
        {"role": "shop-admin", "subjects": [{"group": "ops"}, {"user": "root"}]},
        {"role": "writer", "subjects": [{"user": "alice"}, {"user": "svc-*", "group": "batch"}]},
        {"role": "canary", "subjects": [{"properties": {"team": "*-qa"}}]},
        {"role": "nothing", "subjects": [{"user": "mallory"}]},
    ],
    "valid_duration": "20s",
    "valid_use_count": 7,
}


@dataclass(frozen=True)
class Case:
    name: str
    allowed: bool
    user: str | None = None
    groups: str | None = None
    namespace: str | None = "default"
    service: str | None = "web"
    method: str | None = "GET"
    path: str | None = "/api/items"
    subject_properties: dict[str, Any] = field(default_factory=dict)
    action_properties: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case("anyone reads the api", True, user="bob"),
    Case("even unauthenticated", True),
    Case("prefix path", True, user="bob", path="/api/"),
    Case("suffix path", True, user="bob", path="/static/app.json"),
    Case("exact path", True, user="bob", path="/health"),
    Case("exact path only", False, user="bob", path="/health/deep"),
    Case("path outside the patterns", False, user="bob", path="/admin"),
    Case("no path", False, user="bob", path=None),
    Case("method outside the role", False, user="bob", method="DELETE"),
    Case("methods are case-sensitive", False, user="bob", method="get"),
    Case("another service", False, user="bob", service="billing"),
    Case("second service", True, user="bob", service="catalog"),
    Case("writer writes", True, user="alice", method="POST", path="/api/items/42"),
    Case("writer's paths only", False, user="alice", method="POST", path="/api/users/1"),
    Case("others do not write", False, user="bob", method="POST", path="/api/items/42"),
    Case(
        "user pattern and group", True, user="svc-import", groups="batch", method="PUT", path="/api/items/1"
    ),
    Case(
        "user pattern without the group",
        False,
        user="svc-import",
        groups="web",
        method="PUT",
        path="/api/items/1",
    ),
    Case(
        "group among several",
        True,
        user="carol",
        groups="dev, ops",
        namespace="shop",
        method="DELETE",
        path="/x",
    ),
    Case(
        "group elsewhere", False, user="carol", groups="ops", namespace="default", method="DELETE", path="/x"
    ),
    Case("exact user binding", True, user="root", namespace="shop", service="billing", method="PATCH"),
    Case("no namespace", False, user="root", namespace=None, service="billing", method="PATCH"),
    Case(
        "subject property and action constraint",
        True,
        user="dan",
        method="DELETE",
        subject_properties={"team": "web-qa"},
        action_properties={"version": "canary-3"},
    ),
    Case(
        "constraint not met",
        False,
        user="dan",
        method="DELETE",
        subject_properties={"team": "web-qa"},
        action_properties={"version": "v1"},
    ),
    Case(
        "constraint property absent",
        False,
        user="dan",
        method="DELETE",
        subject_properties={"team": "web-qa"},
    ),
    Case("a role without rules grants nothing more", False, user="mallory", method="DELETE"),
]


def authorization(case: Case) -> AuthorizationInstance:
    return AuthorizationInstance(
        "request.istio-system",
        Subject(case.user, case.groups, dict(case.subject_properties)),
        Action(case.namespace, case.service, case.method, case.path, dict(case.action_properties)),
    )


@pytest.fixture(scope="module")
def rbac() -> RbacHandler:
    return RbacHandler(RbacConfig.model_validate(POLICY))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_decisions(rbac: RbacHandler, case: Case) -> None:
    result = await rbac.handle_check(authorization(case))
    assert (result.status.code is Code.OK) is case.allowed, result.status
    if not case.allowed:
        assert result.status.code is Code.PERMISSION_DENIED
    assert result.valid_duration == timedelta(seconds=20)
    assert result.valid_use_count == 7


async def test_a_denial_names_the_subject_and_the_action(rbac: RbacHandler) -> None:
    result = await rbac.handle_check(
        authorization(
            Case(
                "x",
                False,
                user="alice",
                groups="dev,qa",
                namespace="shop",
                method="DELETE",
                path="/api/items",
            )
        )
    )
    assert result.status.message == (
        'RBAC: user "alice" (groups: dev, qa) may not DELETE /api/items on service web in namespace shop'
    )
    anonymous = await rbac.handle_check(
        authorization(Case("x", False, method="POST", path="/x", namespace=None))
    )
    assert anonymous.status.message == "RBAC: an unauthenticated caller may not POST /x on service web"


async def test_deny_by_default() -> None:
    empty = RbacHandler(RbacConfig())
    result: CheckResult = await empty.handle_check(authorization(Case("x", False, user="root")))
    assert result.status.code is Code.PERMISSION_DENIED
    assert empty.denied == 1


async def test_other_templates_are_invalid(rbac: RbacHandler) -> None:
    result = await rbac.handle_check(ListEntryInstance("x.istio-system", "v"))
    assert result.status.code is Code.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("patterns", "value", "matches"),
    [
        ([], "anything", True),
        ([], None, True),
        (["*"], None, True),
        (["a"], "a", True),
        (["a"], "ab", False),
        (["a"], None, False),
        (["/api/*"], "/api/x", True),
        (["/api/*"], "/api", False),
        (["*.json"], "x.json", True),
        (["*.json"], "x.jsonp", False),
        (["x", "/a/*", "*.b"], "q.b", True),
    ],
)
def test_patterns(patterns: list[str], value: str | None, matches: bool) -> None:
    assert Patterns(patterns).matches(value) is matches


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"roles": [{"name": "r", "rules": [{"paths": ["/a/*/b"]}]}]}, "'*' may only stand alone"),
        ({"roles": [{"name": "r", "rules": [{"paths": ["*a*"]}]}]}, "not both"),
        ({"roles": [{"name": "r"}, {"name": "r"}]}, "role 'r' is defined twice"),
        (
            {"roles": [{"name": "r"}], "bindings": [{"role": "x", "subjects": [{"user": "a"}]}]},
            "unknown role 'x' (roles: r)",
        ),
        ({"roles": [{"name": "r"}], "bindings": [{"role": "r", "subjects": [{}]}]}, "a subject needs a user"),
        ({"roles": [{"name": "r"}], "bindings": [{"role": "r", "subjects": []}]}, "at least 1 item"),
        ({"roles": [{"name": "r", "rules": [{"verbs": ["GET"]}]}]}, "verbs"),
    ],
)
def test_config_errors(params: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        RbacConfig.model_validate(params)
    assert fragment in str(info.value)


CONFIG = """
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: rbac, namespace: istio-system}
spec:
  compiledAdapter: rbac
  params:
    roles: [{name: reader, rules: [{methods: [GET]}]}]
    bindings: [{role: reader, subjects: [{group: dev}]}]
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: request, namespace: istio-system}
spec:
  compiledTemplate: authorization
  params:
    subject:
      user: request.auth.principal | ""
      groups: request.auth.claims["groups"] | ""
    action:
      method: request.method | ""
      path: request.path | ""
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: authorize, namespace: istio-system}
spec:
  actions: [{handler: rbac, instances: [request]}]
"""


async def test_in_a_config_through_the_runtime() -> None:
    registry = create_plugin_manager(load_entry_points=False, blocked=()).registry()
    runtime = build_runtime(load_config_text(CONFIG, registry, source_name="rbac.yaml", environ={}), registry)
    await runtime.start()
    try:
        dev: dict[str, AttributeValue] = {
            "request.auth.principal": "iss/ann",
            "request.auth.claims": {"groups": "dev"},
        }
        assert (await runtime.check(AttributeBag({**dev, "request.method": "GET"}))).status.code is Code.OK
        denied = await runtime.check(AttributeBag({**dev, "request.method": "POST", "request.path": "/x"}))
        assert denied.status.code is Code.PERMISSION_DENIED
        assert denied.status.message == 'rbac.istio-system:RBAC: user "iss/ann" (groups: dev) may not POST /x'
    finally:
        await runtime.shutdown(5.0)
