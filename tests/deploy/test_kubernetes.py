"""deploy/kubernetes/: every manifest against the Kubernetes API schemas (kubernetes-validate ships
them; no cluster), and the manifests against each other, the image and the config they carry."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy import kubernetes_config
from tests.deploy._dockerfile import parse

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
#: The oldest and the newest Kubernetes release the manifests are meant for.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
MIXER = Path(sys.executable).with_name("mixer")


def _documents() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text("utf-8")):
            if doc is not None:
                out.append((path.name, doc))
    return out


DOCUMENTS = _documents()


def _one(kind: str, name: str) -> dict[str, Any]:
    found = [doc for _, doc in DOCUMENTS if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} documents"
    document: dict[str, Any] = found[0]
    return document


def _container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    found = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    assert len(found) == 1, name
    container: dict[str, Any] = found[0]
    return container


def _args(container: dict[str, Any]) -> dict[str, str]:
    return dict(arg.partition("=")[::2] for arg in container["args"] if arg.startswith("--"))


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    ("file", "doc"), DOCUMENTS, ids=[f"{f}:{d['kind']}/{d['metadata']['name']}" for f, d in DOCUMENTS]
)
def test_manifest_matches_the_kubernetes_schema(file: str, doc: dict[str, Any], version: str) -> None:
    # strict: an unknown or misspelt field is an error, not silently dropped by the API server.
    kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_refuses_a_broken_manifest() -> None:
    deployment = yaml.safe_load(yaml.safe_dump(_one("Deployment", "mixer")))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)
    container["readinessProbe"] = container.pop("readinesProbe")
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_every_object_is_namespaced_in_mixer_and_kustomized() -> None:
    kinds = {doc["kind"] for _, doc in DOCUMENTS}
    assert {
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
    } <= kinds
    for _, doc in DOCUMENTS:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "mixer", doc["metadata"]
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text("utf-8"))
    files = {path.name for path in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    image = _container(_one("Deployment", "mixer"), "mixer")["image"]
    assert [i["name"] for i in kustomization["images"]] == [image.partition(":")[0]]
    # The tag `make image` gives the image: the package version.
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text("utf-8"), re.M)
    assert version is not None
    assert image.partition(":")[2] == kustomization["images"][0]["newTag"] == version.group(1)


def test_the_config_map_is_generated_from_its_sources() -> None:
    text = (MANIFESTS / "configmap.yaml").read_text("utf-8")
    assert text == kubernetes_config.render(), "regenerate: python -m tests.deploy.kubernetes_config"
    data = _one("ConfigMap", "mixer-config")["data"]
    assert data == kubernetes_config.config_files()
    # The stock Istio telemetry files are there, unchanged.
    for name in ("attributes.yaml", "metrics.yaml", "accesslog.yaml", "tracing.yaml"):
        assert data[name] == (ROOT / "deploy/config/istio-1.4/v1.1" / name).read_text("utf-8")


def _env() -> dict[str, str]:
    data: dict[str, str] = _one("ConfigMap", "mixer-env")["data"]
    return data


def test_every_variable_the_config_reads_is_set_to_an_in_cluster_name() -> None:
    referenced: set[str] = set()
    for text in kubernetes_config.config_files().values():
        referenced |= set(re.findall(r"\$\{(MIXER_[A-Z_]+)", text))
    env = _env()
    container = _one("Deployment", "mixer")["spec"]["template"]["spec"]["containers"][0]
    secrets = {var["name"] for var in container.get("env", []) if "secretKeyRef" in var.get("valueFrom", {})}
    assert secrets == {"MIXER_ACCESSLOG_SALT"}, "secrets come from a Secret, not the env ConfigMap"
    assert referenced == set(env) | secrets, "env.yaml and the Secret refs set exactly what the config reads"
    for name in ("MIXER_KAFKA_BROKERS", "MIXER_ES_URL", "MIXER_OTLP_ENDPOINT", "MIXER_REDIS_URL"):
        assert re.search(r"\b[a-z0-9-]+\.[a-z0-9-]+\.svc\.cluster\.local:\d+\b", env[name]), (name, env[name])
    # The quota store is the Redis these manifests run.
    redis = _one("Service", "mixer-redis")
    assert env["MIXER_REDIS_URL"].startswith(
        f"redis://mixer-redis.mixer.svc.cluster.local:{redis['spec']['ports'][0]['port']}/"
    )
    assert env["MIXER_PROMETHEUS_LISTEN"].startswith("0.0.0.0:")


def test_the_config_map_loads(tmp_path: Path) -> None:
    """`mixer validate` of the mounted directory, with the pod's environment."""
    for name, text in _one("ConfigMap", "mixer-config")["data"].items():
        (tmp_path / name).write_text(text, "utf-8")
    done = subprocess.run(
        [str(MIXER), "validate", str(tmp_path)],
        env={**_env(), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    handlers = {
        doc["metadata"]["name"]
        for text in _one("ConfigMap", "mixer-config")["data"].values()
        for doc in yaml.safe_load_all(text)
        if doc and doc["kind"] == "handler"
    }
    assert handlers == {"prometheus", "stdio", "otlp", "kafka", "elasticsearch", "quotahandler"}
    assert re.search(rf"\bok: {len(handlers)} handlers\b", done.stdout), done.stdout


def test_the_pod_is_locked_down() -> None:
    deployment = _one("Deployment", "mixer")
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment, "mixer")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == _one("ServiceAccount", "mixer")["metadata"]["name"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    # The same numeric user the image runs as.
    (user,) = [i for i in parse(ROOT / "deploy/container/Dockerfile") if i.keyword == "USER"]
    uid, _, gid = user.operands()[0].partition(":")
    assert (security["runAsUser"], security["runAsGroup"]) == (int(uid), int(gid))
    for key in ("requests", "limits"):
        assert {"memory"} <= container["resources"][key].keys()
    assert "cpu" in container["resources"]["requests"]


def test_every_path_the_server_writes_is_a_volume() -> None:
    deployment = _one("Deployment", "mixer")
    container = _container(deployment, "mixer")
    args = _args(container)
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[args["--config"]]["readOnly"] is True
    assert args["--data-dir"] in mounts
    assert "/tmp" in mounts
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts[args["--config"]]["name"]]["configMap"]["name"] == "mixer-config"
    for path in (args["--data-dir"], "/tmp"):
        assert "sizeLimit" in volumes[mounts[path]["name"]]["emptyDir"]


def test_probes_and_drain() -> None:
    # The probes are HTTP on the admin port (/readyz goes 503 with gRPC health NOT_SERVING): plain
    # HTTP there even when --tls-cert puts TLS on the HTTP port.
    deployment = _one("Deployment", "mixer")
    container = _container(deployment, "mixer")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    args = _args(container)
    assert int(args["--http-listen"].rpartition(":")[2]) == ports["http"]
    assert int(args["--admin-listen"].rpartition(":")[2]) == ports["http-admin"]
    assert int(args["--grpc-listen"].rpartition(":")[2]) == ports["grpc"]
    assert int(_env()["MIXER_PROMETHEUS_LISTEN"].rpartition(":")[2]) == ports["metrics"]
    for probe, path in (
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ):
        assert container[probe]["httpGet"] == {"path": path, "port": "http-admin"}, probe
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > pre_stop + float(args["--shutdown-timeout"]), "SIGKILL would cut the drain short"


def test_service_hpa_pdb_and_policies_point_at_the_pods() -> None:
    deployment = _one("Deployment", "mixer")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    container = _container(deployment, "mixer")
    port_names = {p["name"] for p in container["ports"]}

    def selects(selector: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in selector.items())

    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = _one("Service", "mixer")
    assert selects(service["spec"]["selector"])
    assert {p["targetPort"] for p in service["spec"]["ports"]} == port_names
    assert {p["name"]: p.get("appProtocol") for p in service["spec"]["ports"]}["grpc"] == "grpc"
    hpa = _one("HorizontalPodAutoscaler", "mixer")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "mixer"}
    assert hpa["spec"]["minReplicas"] >= 2, "one replica could not satisfy the PodDisruptionBudget"
    pdb = _one("PodDisruptionBudget", "mixer")
    assert selects(pdb["spec"]["selector"]["matchLabels"])
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    policy = _one("NetworkPolicy", "mixer")
    assert selects(policy["spec"]["podSelector"]["matchLabels"])
    allowed_in = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert allowed_in == port_names
    allowed_out = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    env = _env()
    for name in ("MIXER_KAFKA_BROKERS", "MIXER_ES_URL", "MIXER_OTLP_ENDPOINT", "MIXER_REDIS_URL"):
        port = re.search(r":(\d+)(/|$)", env[name].partition("://")[2] or env[name])
        assert port is not None, name
        assert int(port.group(1)) in allowed_out, name
    redis = _one("Deployment", "mixer-redis")
    redis_policy = _one("NetworkPolicy", "mixer-redis")
    assert (
        redis_policy["spec"]["podSelector"]["matchLabels"].items()
        <= redis["spec"]["template"]["metadata"]["labels"].items()
    )
    (source,) = redis_policy["spec"]["ingress"][0]["from"]
    assert selects(source["podSelector"]["matchLabels"])
