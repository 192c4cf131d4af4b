"""Name resolution of rule references: short, qualified, legacy ``name.kind[.namespace]``."""

from __future__ import annotations

import pytest

from tests.config.conftest import ErrorsOf, Loader, doc, docs


def handler(name: str, namespace: str | None = None) -> str:
    return doc("handler", name, "compiledAdapter: recorder", namespace)


def metric(name: str, namespace: str | None = None, kind: str = "instance") -> str:
    if kind == "instance":
        return doc("instance", name, "compiledTemplate: metric\nparams: {value: '1'}", namespace)
    return doc(kind, name, "value: '1'", namespace)


def rule(handler_ref: str, instance_ref: str, namespace: str | None = None) -> str:
    return doc("rule", "r", f"actions:\n- handler: {handler_ref}\n  instances: [{instance_ref}]", namespace)


@pytest.mark.parametrize(
    ("objects", "rule_namespace", "handler_ref", "instance_ref", "expected"),
    [
        # A short name: the rule's namespace first, then the default config namespace.
        ([handler("h", "shop"), handler("h"), metric("m")], "shop", "h", "m", ("h.shop", "m.istio-system")),
        ([handler("h"), metric("m", "shop")], "shop", "h", "m", ("h.istio-system", "m.shop")),
        # name.namespace names any namespace.
        ([handler("h", "other"), metric("m", "other")], "shop", "h.other", "m.other", ("h.other", "m.other")),
        # 1.1+ objects written the legacy way: name.kind and name.kind.namespace.
        (
            [handler("h"), metric("m", "other")],
            None,
            "h.handler",
            "m.instance.other",
            ("h.istio-system", "m.other"),
        ),
        # Legacy objects: name.kind, name.kind.namespace, or a bare name when only one fits.
        (
            [doc("recorder", "h", "{}"), metric("m", kind="metric")],
            None,
            "h.recorder",
            "m.metric.istio-system",
            ("h.recorder.istio-system", "m.metric.istio-system"),
        ),
        (
            [doc("recorder", "h", "{}", "shop"), metric("m", "shop", kind="metric")],
            "shop",
            "h",
            "m",
            ("h.recorder.shop", "m.metric.shop"),
        ),
    ],
)
def test_references_resolve(
    load: Loader,
    objects: list[str],
    rule_namespace: str | None,
    handler_ref: str,
    instance_ref: str,
    expected: tuple[str, str],
) -> None:
    config = load(docs(*objects, rule(handler_ref, instance_ref, rule_namespace)))
    (action,) = config.rules[0].actions
    assert (action.handler, action.instances[0]) == expected


def test_rules_in_other_namespaces_do_not_see_each_other(errors_of: ErrorsOf) -> None:
    (message,) = errors_of(docs(handler("h", "a"), metric("m"), rule("h", "m", "b")))
    assert message == (
        'test.yaml: document 3 (rule r.b): spec.actions[0].handler: unknown handler "h" '
        "(other namespaces have h.a) (looked for h.b and h.istio-system)"
    )


def test_ambiguous_bare_legacy_names(errors_of: ErrorsOf) -> None:
    (message,) = errors_of(
        docs(doc("recorder", "h", "{}"), doc("gatekeeper", "h", "{}"), metric("m"), rule("h", "m"))
    )
    assert message.endswith(
        'spec.actions[0].handler: "h" is ambiguous in namespace istio-system (write one of h.gatekeeper, h.recorder)'
    )


def test_legacy_kind_must_match(errors_of: ErrorsOf) -> None:
    (message,) = errors_of(docs(handler("h"), metric("m"), rule("h.recorder", "m")))
    assert 'unknown handler "h.recorder"' in message
