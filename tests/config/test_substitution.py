"""``${VAR}`` / ``${VAR:-default}`` substitution in string values, before validation."""

from __future__ import annotations

from mixer.attributes import AttributeBag
from tests.config.conftest import ErrorsOf, Loader, RecorderParams, doc, docs


def params(load: Loader, spec: str, environ: dict[str, str]) -> RecorderParams:
    config = load(doc("handler", "rec", "compiledAdapter: recorder\nparams:\n" + spec), environ)
    result = config.handlers["rec.istio-system"].params
    assert isinstance(result, RecorderParams)
    return result


def test_variables_defaults_and_escapes(load: Loader) -> None:
    env = {"HOST": "collector", "EMPTY": "", "SIZE": "50"}
    got = params(
        load,
        "  endpoint: ${HOST}:${PORT:-4317}\n  batch_size: ${SIZE}\n  labels: ['$${HOST}', 'a$$b', '${EMPTY:-x}', '$5', '${EMPTY}']",
        env,
    )
    assert got.endpoint == "collector:4317"
    assert got.batch_size == 50  # substituted text is validated like any YAML string
    assert got.labels == ["${HOST}", "a$b", "x", "$5", ""]


def test_values_are_not_reparsed_as_yaml_or_substituted_again(load: Loader) -> None:
    got = params(load, "  endpoint: ${V}", {"V": "a: [b] ${W}", "W": "no"})
    assert got.endpoint == "a: [b] ${W}"


def test_substitution_in_expressions(load: Loader) -> None:
    config = load(
        doc("instance", "m", "compiledTemplate: metric\nparams:\n  value: '\"${CLUSTER:-dev}\"'"),
        {"CLUSTER": "eu-1"},
    )
    assert config.instances["m.istio-system"].builder.build(AttributeBag({})).value == "eu-1"  # type: ignore[attr-defined]


def test_unset_variables_are_errors_naming_file_document_and_variable(errors_of: ErrorsOf) -> None:
    errors = errors_of(
        docs(
            doc("handler", "a", "compiledAdapter: recorder\nparams:\n  endpoint: ${HOST}:${PORT}"),
            doc("handler", "b", "compiledAdapter: recorder\nparams:\n  labels: [ok, '${1BAD}', '${OPEN']"),
        )
    )
    assert errors == [
        "test.yaml: document 1: spec.params.endpoint: environment variable HOST is not set and has no default",
        "test.yaml: document 1: spec.params.endpoint: environment variable PORT is not set and has no default",
        "test.yaml: document 2: spec.params.labels[1]: malformed variable reference '${1BAD}' "
        "(write $$ for a literal $)",
        "test.yaml: document 2: spec.params.labels[2]: malformed variable reference '${OPEN' "
        "(write $$ for a literal $)",
    ]


def test_keys_are_not_substituted(errors_of: ErrorsOf) -> None:
    (message,) = errors_of(doc("handler", "a", "compiledAdapter: recorder\nparams:\n  ${KEY}: 1"))
    assert message == "test.yaml: document 1 (handler a.istio-system): spec.params.${KEY}: unknown field"
