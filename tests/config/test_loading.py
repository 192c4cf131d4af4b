"""Loading the 1.1+ form, the legacy form, Lists and directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixer.attributes import ISTIO_MANIFEST, AttributeBag, ValueType
from mixer.config import (
    DEFAULT_CONFIG_NAMESPACE,
    ConfigError,
    HeaderOperationKind,
    config_files,
    load_config,
)
from mixer.registry import Registry
from mixer.templates import ListEntryInstance, MetricInstance
from tests.config.conftest import ErrorsOf, Loader, RecorderParams, doc, docs

METRIC = doc(
    "instance",
    "requestcount",
    """
    compiledTemplate: metric
    params:
      value: "1"
      dimensions:
        source_app: source.labels["app"] | "unknown"
        response_code: response.code | 200
    """,
)
HANDLER = doc("handler", "rec", "compiledAdapter: recorder\nparams:\n  endpoint: collector:4000")
RULE = doc(
    "rule",
    "sendmetrics",
    """
    match: context.protocol == "http"
    actions:
    - handler: rec
      instances: [requestcount]
    """,
)


def test_loads_the_current_form(load: Loader) -> None:
    config = load(docs(METRIC, HANDLER, RULE))

    assert set(config.instances) == {"requestcount.istio-system"}
    assert set(config.handlers) == {"rec.istio-system"}
    handler = config.handlers["rec.istio-system"]
    assert handler.adapter == "recorder"
    assert isinstance(handler.params, RecorderParams)
    assert handler.params.endpoint == "collector:4000"
    assert handler.source.document == 2
    (rule,) = config.rules
    assert rule.name == "sendmetrics.istio-system"
    assert rule.namespace == DEFAULT_CONFIG_NAMESPACE
    assert rule.match is not None
    assert rule.match.text == 'context.protocol == "http"'
    assert rule.actions[0].handler == "rec.istio-system"
    assert rule.actions[0].instances == ("requestcount.istio-system",)
    assert config.manifest == ISTIO_MANIFEST


def test_loads_the_legacy_form(load: Loader) -> None:
    config = load(
        docs(
            doc("metric", "requestcount", 'value: "1"\ndimensions:\n  code: response.code | 200'),
            doc("recorder", "handler", "batch_size: 5"),
            doc("listentry", "caller", "value: source.name"),
            doc("gatekeeper", "handler", "allow: [a, b]"),
            doc(
                "rule",
                "r",
                """
                actions:
                - handler: handler.recorder
                  instances: [requestcount.metric]
                - handler: handler.gatekeeper.istio-system
                  instances: [caller.listentry.istio-system]
                """,
            ),
        )
    )
    # Legacy objects keep their kind in the name, as in Istio 1.0, so two may share a name.
    assert set(config.handlers) == {"handler.recorder.istio-system", "handler.gatekeeper.istio-system"}
    assert config.handlers["handler.gatekeeper.istio-system"].adapter == "gate"
    assert config.instances["caller.listentry.istio-system"].template == "listentry"
    (rule,) = config.rules
    assert rule.match is None
    assert [a.handler for a in rule.actions] == [
        "handler.recorder.istio-system",
        "handler.gatekeeper.istio-system",
    ]
    assert rule.actions[1].instances == ("caller.listentry.istio-system",)
    built = config.instances["caller.listentry.istio-system"].builder.build(
        AttributeBag({"source.name": "x"})
    )
    assert built == ListEntryInstance("caller.listentry.istio-system", "x")


def test_accepts_both_api_versions_and_namespaces(load: Loader) -> None:
    text = METRIC.replace("config.istio.io/v1alpha2", "policy.istio.io/v1beta1")
    text = text.replace("name: requestcount\n", "name: requestcount\n  namespace: shop\n")
    config = load(text)
    assert config.instances["requestcount.shop"].namespace == "shop"


def test_skips_empty_documents_and_proxy_side_kinds(load: Loader) -> None:
    quota_spec = (
        "apiVersion: config.istio.io/v1alpha2\nkind: QuotaSpec\nmetadata:\n  name: q\nspec:\n  rules: []\n"
    )
    config = load("---\n---\n# only a comment\n---\n" + METRIC + "---\n" + quota_spec)
    assert list(config.instances) == ["requestcount.istio-system"]
    assert config.instances["requestcount.istio-system"].source.document == 3


def test_kubernetes_list(load: Loader, errors_of: ErrorsOf) -> None:
    items = "\n".join("- " + part.replace("\n", "\n  ").rstrip() for part in (METRIC, HANDLER, RULE))
    text = f"apiVersion: v1\nkind: List\nitems:\n{items}\n"
    config = load(text)
    assert set(config.instances) == {"requestcount.istio-system"}
    assert len(config.rules) == 1

    bad = text.replace("compiledAdapter: recorder", "compiledAdapter: nope")
    (message,) = errors_of(bad)
    assert message.startswith(
        "test.yaml: document 1 (handler rec.istio-system): items[1].spec.compiledAdapter:"
    )
    assert errors_of("apiVersion: v1\nkind: List\nitems: 3\n") == [
        "test.yaml: document 1: items: a List needs a list of items"
    ]


def test_template_fields_in_camel_case(load: Loader, errors_of: ErrorsOf) -> None:
    config = load(
        doc(
            "instance",
            "m",
            """
            compiledTemplate: metric
            params:
              value: "1"
              monitoredResourceType: '"global"'
              monitoredResourceDimensions:
                project: '"p"'
            """,
        )
    )
    built = config.instances["m.istio-system"].builder.build(AttributeBag({}))
    assert isinstance(built, MetricInstance)
    assert built.monitored_resource_type == "global"
    assert built.monitored_resource_dimensions == {"project": "p"}

    (message,) = errors_of(
        doc(
            "instance",
            "m",
            "compiledTemplate: metric\nparams:\n  value: '1'\n  monitored_resource_type: '\"a\"'\n"
            "  monitoredResourceType: '\"b\"'",
        )
    )
    assert 'field "monitored_resource_type" is given twice' in message


def test_header_operations_and_sampling(load: Loader) -> None:
    config = load(
        docs(
            METRIC,
            HANDLER,
            doc(
                "rule",
                "r",
                """
                actions:
                - {handler: rec, instances: [requestcount], name: a1}
                requestHeaderOperations:
                - name: x-user
                  values: [source.principal | "anonymous", '"fixed"']
                responseHeaderOperations:
                - name: x-debug
                  operation: REMOVE
                sampling:
                  random:
                    percentSampled: {numerator: 25, denominator: TEN_THOUSAND}
                    useIndependentRandomness: true
                  rateLimit:
                    samplingDuration: 1m30s
                    maxUnsampledEntries: 100
                    samplingRate: 10
                """,
            ),
        )
    )
    (rule,) = config.rules
    assert rule.actions[0].name == "a1"
    (op,) = rule.request_header_operations
    assert op.name == "x-user"
    assert op.operation is HeaderOperationKind.REPLACE
    assert [v.text for v in op.values] == ['source.principal | "anonymous"', '"fixed"']
    assert all(v.type is ValueType.STRING for v in op.values)
    assert op.values[0].evaluate(AttributeBag({})) == "anonymous"
    assert rule.response_header_operations[0].operation is HeaderOperationKind.REMOVE
    sampling = rule.sampling
    assert sampling is not None
    assert sampling.random_percent == pytest.approx(0.25)
    assert sampling.random_use_independent_randomness
    assert sampling.rate_sampling_rate == 10
    assert sampling.rate_max_unsampled_entries == 100
    assert sampling.rate_sampling_duration is not None
    assert sampling.rate_sampling_duration.total_seconds() == 90


def test_attribute_manifests_extend_the_base(load: Loader) -> None:
    config = load(
        docs(
            doc(
                "attributemanifest",
                "extra",
                """
                attributes:
                  plan.tier: {valueType: STRING, description: the caller's plan}
                  source.ip: {valueType: IP_ADDRESS}
                """,
            ),
            doc("instance", "m", 'compiledTemplate: metric\nparams:\n  value: plan.tier | "free"'),
        )
    )
    assert config.manifest["plan.tier"] is ValueType.STRING
    assert config.manifest.info("plan.tier").description == "the caller's plan"
    assert config.instances["m.istio-system"].builder.build(AttributeBag({})).value == "free"  # type: ignore[attr-defined]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_directories_are_read_recursively_in_order(tmp_path: Path, registry: Registry) -> None:
    write(tmp_path / "b" / "rules.yml", RULE)
    write(tmp_path / "a.yaml", METRIC)
    write(tmp_path / "b" / "handler.yaml", HANDLER)
    write(tmp_path / "notes.txt", "not config")
    write(tmp_path / ".hidden.yaml", "garbage: [")
    write(tmp_path / "..data" / "a.yaml", METRIC)  # a ConfigMap volume's link target

    files = config_files([tmp_path])
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["a.yaml", "b/handler.yaml", "b/rules.yml"]
    config = load_config([tmp_path], registry, environ={})
    assert len(config.rules) == 1
    # A file named twice (directly and through its directory) is read once.
    assert config_files([tmp_path / "a.yaml", tmp_path]) == files


def test_missing_paths_are_errors(tmp_path: Path, registry: Registry) -> None:
    with pytest.raises(ConfigError) as info:
        config_files([tmp_path / "nope", tmp_path / "nope2.yaml"])
    assert [str(i) for i in info.value.issues] == [
        f"{tmp_path / 'nope'}: no such file or directory",
        f"{tmp_path / 'nope2.yaml'}: no such file or directory",
    ]
    with pytest.raises(ConfigError, match="no such file"):
        load_config([tmp_path / "nope"], registry)


def test_environment_defaults_to_the_process_environment(
    tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIXER_TEST_ENDPOINT", "from-env:1")
    path = write(tmp_path / "h.yaml", HANDLER.replace("collector:4000", "${MIXER_TEST_ENDPOINT}"))
    config = load_config([path], registry)
    params = config.handlers["rec.istio-system"].params
    assert isinstance(params, RecorderParams)
    assert params.endpoint == "from-env:1"
