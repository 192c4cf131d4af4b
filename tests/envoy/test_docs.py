"""docs/envoy.md: its Mixer configs load and build, its Envoy snippets match what the tests send."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from mixer.api.envoy_authz import CONTEXT_EXTENSIONS
from mixer.api.envoy_ratelimit import DESCRIPTOR, DOMAIN, HITS_ADDEND
from mixer.attributes import ISTIO_MANIFEST, ValueType
from mixer.runtime import build_runtime
from mixer.server import DEFAULT_GRPC_LISTEN
from tests.envoy.support import DocBlock, doc_blocks, doc_config, golden_json, load, real_registry

MARKERS = {"config: valid", "config: complete", "config: addition", "envoy"}
BLOCKS = doc_blocks()


def envoy_snippets() -> list[Any]:
    return [yaml.safe_load(block.text) for block in BLOCKS if block.marker == "envoy"]


def find(tree: Any, key: str) -> list[Any]:
    """Every value under ``key`` anywhere in a parsed YAML tree."""
    found: list[Any] = []
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k == key:
                found.append(v)
            found.extend(find(v, key))
    elif isinstance(tree, list):
        for item in tree:
            found.extend(find(item, key))
    return found


def test_every_block_has_a_known_marker() -> None:
    assert {block.marker for block in BLOCKS} == MARKERS
    assert sum(block.marker == "envoy" for block in BLOCKS) == 3


@pytest.mark.parametrize(
    "block", [b for b in BLOCKS if b.marker.startswith("config")], ids=lambda b: f"line{b.line}"
)
def test_mixer_configs_load_and_build(block: DocBlock) -> None:
    text = block.text
    if block.marker == "config: addition":
        text = doc_config("complete") + "---\n" + text
    registry = real_registry()
    runtime = build_runtime(load(text, registry), registry)
    assert runtime.handlers or block.marker == "config: valid"


def test_the_declared_extra_attributes_are_the_ones_the_servicers_add() -> None:
    (block,) = [b for b in BLOCKS if b.marker == "config: valid"]
    declared = yaml.safe_load(block.text)["spec"]["attributes"]
    assert {name: ValueType[spec["valueType"]] for name, spec in declared.items()} == {
        DOMAIN: ValueType.STRING,
        DESCRIPTOR: ValueType.STRING_MAP,
        HITS_ADDEND: ValueType.INT64,
        CONTEXT_EXTENSIONS: ValueType.STRING_MAP,
    }
    assert not set(declared) & set(ISTIO_MANIFEST)
    assert f"{DOMAIN}: {{valueType: STRING}}" in doc_config("complete")


def test_the_envoy_snippets_point_at_mixer_with_the_v3_transport() -> None:
    cluster, manager, _ = envoy_snippets()
    (port,) = find(cluster, "port_value")
    assert port == int(DEFAULT_GRPC_LISTEN.rpartition(":")[2])
    assert find(cluster, "http2_protocol_options") == [{}]
    assert find(manager, "transport_api_version") == ["V3", "V3", "V3"]
    assert {c for c in find(manager, "cluster_name")} == {"mixer"}
    (authz,) = [
        f["typed_config"] for f in find(manager, "http_filters")[0] if f["name"].endswith("ext_authz")
    ]
    assert authz["failure_mode_allow"] is False
    assert "with_request_body" not in authz


def test_the_envoy_snippets_send_what_the_golden_messages_hold() -> None:
    _, manager, rls_plans = envoy_snippets()
    authz_request = golden_json("authz_check_request")["attributes"]
    assert find(manager, "context_extensions") == [authz_request["context_extensions"]]
    (domain,) = find(manager, "domain")
    assert domain == golden_json("rls_request")["domain"]
    assert f'(ratelimit.domain | "") == "{domain}"' in doc_config("complete")
    als = golden_json("als_http_message")
    assert find(manager, "log_name") == [als["identifier"]["log_name"]]
    (entry,) = als["http_logs"]["log_entry"]
    route_clusters = [c for c in find(manager, "cluster") if isinstance(c, str)]
    assert route_clusters == [entry["common_properties"]["upstream_cluster"]]
    assert find(manager, "destination_cluster") == [{}]
    (key,) = find(rls_plans, "descriptor_key")
    assert f'ratelimit.descriptor["{key}"]' in doc_config("addition")
