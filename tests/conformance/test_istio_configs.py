"""Every Mixer config Istio 1.4 shipped (../shared/istio-1.4/) loads as ``mixer validate`` loads it.

A file that refers to objects another file of the same set defines (Mixer loaded them together,
from the cluster or from one directory) is loaded with those files: its companions. A file that
refers to an object the set does not define at all is refused with the clear error Mixer gave.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mixer.config import ConfigError, ValidatedConfig
from tests.conformance.support import ISTIO, istio_dir, istio_file, load_istio, real_registry

#: The folders whose every file is in the bar (testdata-0.8 is informational only).
FOLDERS = ("policy", "telemetry", "testdata", "httpbin", "docs-tasks", "install")

#: Git symlinks in Istio: their content is the link target's path, not a config.
SYMLINK_STUBS = {"testdata/listentrytemplate.yaml", "testdata/metrictemplate.yaml"}
#: Helm templates (``{{ ... }}``), not Mixer input: their rendered forms are the install/istio-*.yaml.
HELM_TEMPLATES = {"install/mixer-config-1.0.6.helm.yaml", "install/mixer-config-1.4.10.helm.yaml"}

#: Files loaded with the files that define what they refer to.
COMPANIONS: dict[str, tuple[str, ...]] = {
    # Adds a rule for the 1.0 install's `handler.prometheus` and `responsesize.metric`.
    "policy/mixer-rule-additional-telemetry.yaml": ("install/istio-1.0.6-nokubeenv.yaml",),
    # Mixer's testdata directory is one config: rules there name objects of other files.
    "testdata/prometheus.yaml": ("testdata/metrics.yaml", "testdata/tcpmetrics.yaml"),
    "testdata/source_ip_deny.yaml": ("testdata/deny.yaml",),
    "testdata/source_user_filter.yaml": ("testdata/deny.yaml",),
    "testdata/tcp_accesslog.yaml": ("testdata/accesslog.yaml",),
    # Binds attributes that testdata/attributes.yaml declares.
    "testdata/kubernetesenv.yaml": ("testdata/attributes.yaml",),
    # The control-headers task applies the keyval template and adapter first.
    "docs-tasks/control-headers-keyval.yaml": ("httpbin/keyval-template.yaml", "httpbin/keyval.yaml"),
    # The adapter document names the template it serves.
    "httpbin/keyval.yaml": ("httpbin/keyval-template.yaml",),
}

#: Files that refer to an object Istio's set does not define, and the clear error Mixer's and our
#: loader give for it (the operator applies the missing document beside them).
INCOMPLETE: dict[str, str] = {
    # The out-of-process prometheus adapter's `kind: adapter` document ships with the adapter.
    "policy/prometheus-oop-rule.yaml": 'out-of-process adapter "prometheus-nosession" is not declared',
}


def _listed() -> list[str]:
    """Every file of the folders in the bar, found on disk (a missing folder fails the run)."""
    root = istio_dir()
    return sorted(
        str(path.relative_to(root))
        for folder in FOLDERS
        for path in (root / folder).glob("*.yaml")
        if str(path.relative_to(root)) not in SYMLINK_STUBS | HELM_TEMPLATES
    )


def _params() -> list[object]:
    try:
        files = _listed()
    except pytest.fail.Exception:
        # Collected as one failing case (the test says why), never silently as none.
        return [pytest.param(None, id="istio-1.4-missing")]
    params: list[object] = []
    for relative in files:
        params.append(pytest.param(relative, id=relative))
    return params


def _load(relative: str) -> ValidatedConfig:
    try:
        return load_istio(relative, *COMPANIONS.get(relative, ()))
    except ConfigError as err:
        issues = "\n".join(str(issue) for issue in err.issues)
        pytest.fail(f"{relative} does not load:\n{issues}")


@pytest.mark.parametrize("relative", _params())
def test_istio_config_loads(relative: str | None) -> None:
    assert relative is not None, f"Istio 1.4's configs are missing from {ISTIO}"
    if relative in INCOMPLETE:
        with pytest.raises(ConfigError) as refused:
            load_istio(relative, *COMPANIONS.get(relative, ()))
        assert any(INCOMPLETE[relative] in str(issue) for issue in refused.value.issues)
        return
    config = _load(relative)
    documents = [doc for doc in yaml.safe_load_all(istio_file(relative).read_text()) if doc]
    kinds = {doc.get("kind") for doc in documents}
    if kinds <= {"Service", "Deployment"}:
        # Kubernetes objects for the out-of-process adapter's own pods: Mixer never sees them.
        assert not config.handlers
        assert not config.instances
        assert not config.rules
        assert not config.oop_adapters
        return
    if kinds <= {"template", "adapter"}:
        # Descriptors (a template's, an adapter's params) are decoded and checked on load, used
        # or not: the load above passing is the check; here, that there was one to check.
        assert all(doc["spec"].get("descriptor") or doc["spec"].get("config") for doc in documents)
        return
    # Every file holds Mixer objects; a load that kept nothing would pass vacuously.
    if not (config.handlers or config.instances or config.rules):
        # An attribute vocabulary: every attribute it declares is known after the load.
        declared = {
            name
            for doc in yaml.safe_load_all(istio_file(relative).read_text())
            if doc and doc.get("kind") == "attributemanifest"
            for name in doc["spec"]["attributes"]
        }
        assert declared, f"{relative} loaded to nothing"
        assert declared <= set(config.manifest)


def test_the_bar_covers_the_folders() -> None:
    files = _listed()
    assert len(files) >= 45, files
    assert set(INCOMPLETE) <= set(files)
    assert set(COMPANIONS) <= set(files)
    # The excluded files are what they are said to be.
    for stub in SYMLINK_STUBS:
        assert istio_file(stub).read_text().startswith("../../template/"), stub
    for template in HELM_TEMPLATES:
        assert "{{" in istio_file(template).read_text(), template


def test_mixer_testdata_loads_as_one_directory() -> None:
    """Mixer's own testdata, loaded as Mixer's tests did: the directory, less the stubs."""
    files = [
        f"testdata/{p.name}"
        for p in sorted((istio_dir() / "testdata").glob("*.yaml"))
        if f"testdata/{p.name}" not in SYMLINK_STUBS
    ]
    config = load_istio(*files)
    assert {h.split(".")[0] for h in config.handlers} == {
        "denyall",
        "staticversion",
        "prometheus",
        "stdio",
        "memquota",
        "kubernetesenv",
    }
    assert len(config.rules) >= 9


@pytest.mark.parametrize(
    ("relative", "adapter"),
    [
        ("policy/mixer-rule-deny-whitelist.yaml", "list"),
        ("policy/mixer-rule-deny-ip.yaml", "list"),
        ("testdata/listcheck.yaml", "list"),
        ("policy/mixer-rule-productpage-ratelimit.yaml", "memquota"),
        ("policy/mixer-rule-productpage-redis-quota-rolling-window.yaml", "redisquota"),
        ("policy/mixer-rule-deny-label.yaml", "denier"),
        ("telemetry/log-entry.yaml", "stdio"),
        ("telemetry/metrics.yaml", "prometheus"),
    ],
)
def test_compiled_adapters_by_their_mixer_names(relative: str, adapter: str) -> None:
    """``compiledAdapter: listchecker`` (Mixer's name) is the list adapter, as ``kind: listchecker``."""
    (handler,) = _load(relative).handlers.values()
    assert handler.adapter == adapter


def test_compiled_templates_by_their_mixer_names() -> None:
    registry = real_registry()
    used = {"listentry", "metric", "logentry", "quota", "checknothing", "apikey", "authorization"}
    used |= {"reportnothing", "tracespan"}
    assert {name for name in used if registry.template(name) is None} == set()


def test_mixer_validate_accepts_a_listchecker_handler() -> None:
    path = istio_file("policy/mixer-rule-deny-whitelist.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "mixer", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: 1 handlers, 1 instances, 1 rules")
