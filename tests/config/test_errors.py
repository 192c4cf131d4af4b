"""Every kind of invalid config is reported with file, document, object and field path, all at once."""

from __future__ import annotations

from pathlib import Path

import pytest

import mixer.config
import mixer.config._source
from mixer.config import ConfigError, ConfigIssue, SourceRef, load_config, load_config_text
from mixer.registry import Registry
from plugins.manager import create_plugin_manager
from tests.config.conftest import ErrorsOf, doc, docs

HANDLER = doc("handler", "rec", "compiledAdapter: recorder")
METRIC = doc("instance", "count", 'compiledTemplate: metric\nparams:\n  value: "1"')


def one(errors: list[str]) -> str:
    assert len(errors) == 1, errors
    return errors[0]


def test_issue_format() -> None:
    issue = ConfigIssue(
        SourceRef("telemetry.yaml", 3, "spec.params.dimensions.source_app"),
        'unknown attribute "source.lables" at 0',
        "instance requestcount.istio-system",
    )
    assert str(issue) == (
        "telemetry.yaml: document 3 (instance requestcount.istio-system): "
        'spec.params.dimensions.source_app: unknown attribute "source.lables" at 0'
    )
    assert str(ConfigIssue(SourceRef("a.yaml", 2), "YAML syntax error: x", line=7)) == (
        "a.yaml: document 2: line 7: YAML syntax error: x"
    )
    error = ConfigError([issue, issue])
    assert str(error).startswith("2 configuration errors:\n  telemetry.yaml: document 3")


def test_unknown_attribute_message(errors_of: ErrorsOf) -> None:
    text = docs(
        HANDLER,
        HANDLER.replace("name: rec", "name: rec2"),
        doc(
            "instance",
            "requestcount",
            """
            compiledTemplate: metric
            params:
              value: "1"
              dimensions:
                source_app: source.lables["app"] | "unknown"
            """,
        ),
    )
    message = one(errors_of(text))
    assert message.startswith(
        "test.yaml: document 3 (instance requestcount.istio-system): spec.params.dimensions.source_app: "
        'unknown attribute "source.lables" at 0'
    )


def test_yaml_syntax_error_names_file_and_line(errors_of: ErrorsOf) -> None:
    text = METRIC + "---\n" + "apiVersion: x\nkind: [unclosed\n"
    message = one(errors_of(text))
    assert message.startswith("test.yaml: document 2: line ")
    assert "YAML syntax error" in message


def test_duplicate_yaml_keys_are_errors(errors_of: ErrorsOf) -> None:
    message = one(errors_of(METRIC + "kind: rule\n"))
    assert message.startswith("test.yaml: document 1: line 9: YAML syntax error")
    assert "duplicate key 'kind'" in message


def test_envelope_errors(errors_of: ErrorsOf) -> None:
    text = docs(
        "- just a list\n",
        "kind: handler\nmetadata: {name: a}\nspec: {compiledAdapter: recorder}\n",
        "apiVersion: v2\nkind: handler\nmetadata: {name: b}\nspec: {compiledAdapter: recorder}\n",
        "apiVersion: config.istio.io/v1alpha2\nkind: handler\nmetadata: {namespace: x}\nspec: {}\n",
        "apiVersion: config.istio.io/v1alpha2\nkind: handler\nmetadata: {name: c}\nspecs: {}\n",
    )
    errors = errors_of(text)
    assert errors[0] == "test.yaml: document 1: a document must be a mapping, got a list"
    assert (
        errors[1] == "test.yaml: document 2 (handler a.istio-system): apiVersion: required field is missing"
    )
    assert errors[2].startswith("test.yaml: document 3 (handler b.istio-system): apiVersion: Input should be")
    assert errors[3] == "test.yaml: document 4: metadata.name: required field is missing"
    assert errors[4] == "test.yaml: document 5 (handler c.istio-system): specs: unknown field"
    assert len(errors) == 5


def test_unknown_kind_lists_known_kinds(errors_of: ErrorsOf) -> None:
    message = one(errors_of(doc("metrik", "m", "value: '1'")))
    assert message.startswith('test.yaml: document 1 (metrik m.istio-system): kind: unknown kind "metrik"')
    assert '(did you mean "metric"?)' in message
    assert "known kinds: attributemanifest, handler, instance, rule" in message
    assert "legacy handler kinds: gatekeeper, recorder" in message
    assert "legacy instance kinds: apikey, authorization, checknothing" in message


def test_out_of_process_documents_are_checked(errors_of: ErrorsOf) -> None:
    errors = errors_of(
        docs(
            doc("handler", "h", "adapter: myadapter\nconnection:\n  address: svc:9000"),
            doc("instance", "i", "template: mytemplate\nparams: {}"),
            doc("adapter", "a", "description: x\nconfig: not-base64!"),
            doc("template", "t", "descriptor: 42"),
        )
    )
    assert errors[0] == (
        "test.yaml: document 1 (handler h.istio-system): spec.adapter: out-of-process adapter "
        '"myadapter" is not declared: add its `kind: adapter` document (declared: a.istio-system)'
    )
    assert errors[1].startswith(
        'test.yaml: document 2 (instance i.istio-system): spec.template: unknown template "mytemplate"'
    )
    assert errors[2].startswith(
        "test.yaml: document 3 (adapter a.istio-system): spec: descriptor is not valid base64"
    )
    assert errors[3].startswith(
        "test.yaml: document 4 (template t.istio-system): spec.descriptor: a template needs `descriptor`"
    )
    assert len(errors) == 4


def test_handler_errors(errors_of: ErrorsOf) -> None:
    errors = errors_of(
        docs(
            doc("handler", "a", "params: {}"),
            doc("handler", "b", "compiledAdapter: recorderr"),
            doc("handler", "c", "compiledAdapter: recorder\nparams:\n  batch_size: lots\n  colour: red"),
            doc("recorder", "d", "labels: 3"),
            doc("handler", "e", "compiledAdapter: recorder\nparams: [1]"),
        )
    )
    assert errors == [
        "test.yaml: document 1 (handler a.istio-system): spec.compiledAdapter: required field is missing",
        'test.yaml: document 2 (handler b.istio-system): spec.compiledAdapter: unknown adapter "recorderr" '
        '(did you mean "recorder"?) (installed: gate, recorder)',
        "test.yaml: document 3 (handler c.istio-system): spec.params.batch_size: "
        "Input should be a valid integer, unable to parse string as an integer",
        "test.yaml: document 3 (handler c.istio-system): spec.params.colour: unknown field",
        "test.yaml: document 4 (recorder d.istio-system): spec.labels: Input should be a valid list",
        "test.yaml: document 5 (handler e.istio-system): spec.params: Input should be a valid dictionary",
    ]


def test_instance_errors(errors_of: ErrorsOf) -> None:
    errors = errors_of(
        docs(
            doc("instance", "a", "compiledTemplate: metrics"),
            doc("instance", "b", "compiledTemplate: metric\nparams:\n  dimensions: {}\n  colour: '\"red\"'"),
            doc("instance", "c", "compiledTemplate: tracespan\nparams:\n  http_status_code: request.path"),
            doc("instance", "d", "compiledTemplate: metric\nparams:\n  value: [1, 2]\n  dimensions: x"),
            doc("instance", "e", "compiledTemplate: metric\nparams:\n  value: 'response.code +'"),
            doc("metric", "f", "value: '1'\ndimensions:\n  7: source.name"),
            doc("metric", "g", "value: ''"),
        )
    )
    assert errors[0].startswith(
        'test.yaml: document 1 (instance a.istio-system): spec.compiledTemplate: unknown template "metrics" '
        '(did you mean "metric"?)'
    )
    assert errors[1] == (
        'test.yaml: document 2 (instance b.istio-system): spec.params.colour: unknown field "colour" for '
        "template metric (fields: value, dimensions, monitored_resource_type, monitored_resource_dimensions)"
    )
    assert (
        errors[2]
        == "test.yaml: document 2 (instance b.istio-system): spec.params.value: required field is missing"
    )
    assert errors[3].startswith(
        "test.yaml: document 3 (instance c.istio-system): spec.params.http_status_code: "
        "expression has type STRING, expected INT64"
    )
    assert (
        errors[4]
        == "test.yaml: document 4 (instance d.istio-system): spec.params.value: expected an expression, got a list"
    )
    assert errors[5] == (
        "test.yaml: document 4 (instance d.istio-system): spec.params.dimensions: "
        "expected a map of names to expressions, got str 'x'"
    )
    assert errors[6].startswith("test.yaml: document 5 (instance e.istio-system): spec.params.value: ")
    assert errors[7] == (
        "test.yaml: document 6 (metric f.istio-system): spec.dimensions.7: map keys must be strings, got int 7 (quote it)"
    )
    assert errors[8] == "test.yaml: document 7 (metric g.istio-system): spec.value: required field is empty"
    assert len(errors) == 9


def test_struct_fields(errors_of: ErrorsOf) -> None:
    message = one(
        errors_of(
            doc(
                "instance",
                "authz",
                "compiledTemplate: authorization\nparams:\n  subject:\n    user: source.principal\n    group: x",
            )
        )
    )
    assert message == (
        'test.yaml: document 1 (instance authz.istio-system): spec.params.subject.group: unknown field "group" '
        "for template authorization field subject (fields: user, groups, properties)"
    )


def test_rule_errors(errors_of: ErrorsOf) -> None:
    check = doc("instance", "caller", "compiledTemplate: listentry\nparams:\n  value: source.name")
    gate = doc("handler", "gate", "compiledAdapter: gate")
    errors = errors_of(
        docs(
            HANDLER,
            METRIC,
            check,
            gate,
            doc(
                "rule",
                "r",
                """
                match: request.path
                actions:
                - handler: recc
                  instances: [count, nothing]
                - handler: rec
                  instances: [caller, count, count.istio-system]
                  name: x
                - handler: gate
                  name: x
                requestHeaderOperations:
                - name: x-code
                  values: [response.code]
                sampling:
                  random:
                    percentSampled: {numerator: 101}
                  rateLimit:
                    samplingDuration: 10 seconds
                """,
            ),
            doc("rule", "s", "actions:\n- handler: rec\n  instances: [count]\nsampling:\n  rateLimit: {}"),
        )
    )
    prefix = "test.yaml: document 5 (rule r.istio-system): "
    assert (
        errors[0]
        == prefix
        + "spec.sampling.rateLimit.samplingDuration: invalid duration '10 seconds' (expected e.g. 10s, 1m30s, 250ms)"
    )
    assert len(errors) == 3
    s_prefix = "test.yaml: document 6 (rule s.istio-system): "
    assert errors[1] == s_prefix + "spec.sampling.rateLimit.samplingRate: must be at least 1"
    assert errors[2] == s_prefix + "spec.sampling.rateLimit.samplingDuration: must be more than 0"

    # Without the spec-level error, the rule's own checks all run and report together.
    errors = errors_of(
        docs(
            HANDLER,
            METRIC,
            check,
            gate,
            doc(
                "rule",
                "r",
                """
                match: request.path
                actions:
                - handler: recc
                  instances: [count, nothing]
                - handler: rec
                  instances: [caller, count, count.istio-system]
                  name: x
                - handler: gate
                  name: x
                requestHeaderOperations:
                - name: x-code
                  values: [response.code]
                sampling:
                  random:
                    percentSampled: {numerator: 101}
                """,
            ),
        )
    )
    assert errors[0].startswith(prefix + "spec.match: expression has type STRING, expected BOOL")
    assert (
        errors[1]
        == prefix
        + 'spec.actions[0].handler: unknown handler "recc" (did you mean "rec"?) (looked for recc.istio-system)'
    )
    assert (
        errors[2]
        == prefix
        + 'spec.actions[0].instances[1]: unknown instance "nothing" (looked for nothing.istio-system)'
    )
    assert errors[3] == (
        prefix
        + 'spec.actions[1].instances[0]: handler "rec.istio-system" (adapter recorder) does not support '
        'template "listentry" of instance "caller.istio-system" (supports: logentry, metric, tracespan)'
    )
    assert errors[4] == prefix + 'spec.actions[1].instances[2]: instance "count.istio-system" is listed twice'
    assert errors[5] == prefix + "spec.actions[2].instances: an action needs at least one instance"
    assert errors[6] == prefix + 'spec.actions[2].name: action name "x" is used twice in this rule'
    assert errors[7].startswith(
        prefix + "spec.requestHeaderOperations[0].values[0]: expression has type INT64"
    )
    assert (
        errors[8]
        == prefix + "spec.sampling.random.percentSampled.numerator: 101/100 is more than 100 percent"
    )
    assert len(errors) == 9


def test_attribute_manifest_errors(errors_of: ErrorsOf) -> None:
    errors = errors_of(
        docs(
            doc(
                "attributemanifest",
                "a",
                "attributes:\n  x.y: {valueType: STRNG}\n  source.ip: {valueType: STRING}",
            ),
            doc("attributemanifest", "b", "attributes:\n  plan: {valueType: STRING}"),
            doc("attributemanifest", "c", "attributes:\n  plan: {valueType: INT64, description: d}"),
        )
    )
    assert errors[0].startswith(
        "test.yaml: document 1 (attributemanifest a.istio-system): spec.attributes.x.y.valueType: "
        "unknown value type 'STRNG' (expected one of STRING, INT64,"
    )
    assert errors[1] == (
        "test.yaml: document 3 (attributemanifest c.istio-system): spec.attributes.plan.valueType: "
        'attribute "plan" is declared as INT64 here and as STRING in test.yaml: document 2'
    )
    assert len(errors) == 2

    errors = errors_of(doc("attributemanifest", "a", "attributes:\n  source.ip: {valueType: STRING}"))
    assert errors == [
        "test.yaml: document 1 (attributemanifest a.istio-system): spec.attributes.source.ip.valueType: "
        'attribute "source.ip" is declared as STRING here and as IP_ADDRESS in the base attribute vocabulary'
    ]


def test_duplicates_name_both_places(errors_of: ErrorsOf) -> None:
    errors = errors_of(
        docs(
            HANDLER,
            METRIC,
            HANDLER,
            METRIC.replace("count\n", "count\n  namespace: istio-system\n"),
            # Same name, other namespace or other role: not duplicates.
            HANDLER.replace("name: rec", "name: rec\n  namespace: shop"),
            doc("rule", "rec", "actions: []"),
        )
    )
    assert errors == [
        'test.yaml: document 3 (handler rec.istio-system): metadata.name: duplicate handler "rec.istio-system", '
        "first defined in test.yaml: document 1",
        "test.yaml: document 4 (instance count.istio-system): metadata.name: duplicate instance "
        '"count.istio-system", first defined in test.yaml: document 2',
    ]


def test_errors_across_files_in_file_order(tmp_path: Path, registry: Registry) -> None:
    (tmp_path / "a.yaml").write_text(doc("handler", "x", "compiledAdapter: nope"))
    (tmp_path / "b.yaml").write_text(docs(doc("rule", "r", "match: 'a ='\nactions: []"), HANDLER))
    (tmp_path / "c.yaml").write_text("key: [")
    with pytest.raises(ConfigError) as info:
        load_config([tmp_path], registry, environ={})
    files = [Path(issue.source.file).name for issue in info.value.issues]
    assert files == ["a.yaml", "b.yaml", "c.yaml"]
    assert str(info.value).startswith("3 configuration errors:\n")


def test_size_bounds(tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "big.yaml"
    big.write_text(HANDLER + "# padding\n" * 100)
    monkeypatch.setattr(mixer.config._source, "MAX_FILE_BYTES", 200)
    with pytest.raises(ConfigError, match=r"big.yaml: file is \d+ bytes, more than the limit of 200"):
        load_config([big], registry, environ={})
    monkeypatch.undo()

    many = tmp_path / "many.yaml"
    many.write_text(docs(*(HANDLER.replace("name: rec", f"name: rec{i}") for i in range(5))))
    monkeypatch.setattr(mixer.config._source, "MAX_DOCUMENTS", 3)
    with pytest.raises(ConfigError) as info:
        load_config([many], registry, environ={})
    assert [str(i) for i in info.value.issues] == [f"{many}: document 4: more than 3 documents"]


def test_alias_bombs_are_bounded(errors_of: ErrorsOf) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [
        f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]"
        for i in range(1, 8)
    ]
    message = one(errors_of("\n".join(lines) + "\n"))
    assert "document has more than 1000000 values (nested YAML aliases?)" in message


def test_deep_nesting_is_bounded(errors_of: ErrorsOf) -> None:
    message = one(errors_of("a: " + "[" * 100 + "]" * 100 + "\n"))
    assert "nested more than 64 levels deep" in message


def test_not_utf8(tmp_path: Path, registry: Registry) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"kind: \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"bin.yaml: not UTF-8 text \(byte 6\)"):
        load_config([path], registry, environ={})


def test_objects_of_other_controllers_are_skipped_but_not_misplaced_mixer_kinds(
    errors_of: ErrorsOf,
) -> None:
    text = docs(
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {replicas: 1}\n",
        "apiVersion: apps/v1\nkind: handler\nmetadata: {name: h}\nspec: {compiledAdapter: recorder}\n",
        "apiVersion: v2\nkind: Service\nmetadata: {name: t}\nspec: {}\n",
    )
    errors = errors_of(text)
    assert errors[0].startswith("test.yaml: document 3 (handler h.istio-system): apiVersion: Input should be")
    assert errors[1].startswith("test.yaml: document 4 (Service t.istio-system): apiVersion: Input should be")
    assert len(errors) == 2


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("(a)\\\\1", "backreference \\1 is not supported by RE2"),
        ("^(?=admin)", "lookaround assertions are not supported by RE2"),
    ],
)
def test_rule_pattern_re2_refuses_is_a_config_error(errors_of: ErrorsOf, pattern: str, reason: str) -> None:
    rule = doc(
        "rule",
        "r",
        f"""
        match: '"{pattern}".matches(request.path)'
        actions:
        - handler: rec
          instances: [count]
        """,
    )
    message = one(errors_of(docs(HANDLER, METRIC, rule)))
    assert message.startswith(
        "test.yaml: document 3 (rule r.istio-system): spec.match: invalid regular expression"
    )
    assert reason in message


def test_list_entry_re2_refuses_is_a_config_error() -> None:
    registry = create_plugin_manager(load_entry_points=False, blocked=()).registry()
    handler = doc(
        "handler",
        "paths",
        """
        compiledAdapter: list
        params:
          entryType: REGEX
          overrides: ["^/ok$", "(a)\\\\1", "^(?!x)"]
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_config_text(handler, registry, source_name="lists.yaml", environ={})
    message = one([str(issue) for issue in info.value.issues])
    assert message.startswith("lists.yaml: document 1 (handler paths.istio-system): spec.params")
    assert "invalid regular expression '(a)\\\\1': backreference \\1 is not supported by RE2" in message
