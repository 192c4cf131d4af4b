"""deploy/prometheus/ and deploy/grafana/: the scrape config and the alert rules through promtool
(config check, rules check, the rules' unit tests with our own series), and every alert and panel
query parsed by promtool and naming only metrics a running hub really exports (collected by
``tests.deploy._exported`` from a real ``mixer serve`` with a real Redis)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.backends.prometheus import PROMTOOL
from tests.deploy._exported import Exported, collect

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
SCRAPE_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTS = PROMETHEUS_DIR / "mixer-alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "mixer-alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "mesh-mixer.json"
SERVICES = ROOT / "deploy" / "kubernetes" / "service.yaml"

#: Series Prometheus makes itself for every target; no exporter has them.
SCRAPE_SERIES = frozenset({"up"})
#: The Grafana variables the dashboard's queries use, and a value each takes.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$instance": ".*"}
#: Labels Prometheus adds to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})
_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "inf",
        "nan",
    }
)


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


# -- PromQL, as far as the checks need it ----------------------------------------------------------


def selectors(expr: str) -> list[tuple[str, dict[str, str]]]:
    """Every metric a PromQL expression selects, with its label matchers (name -> matcher text)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', lambda m: m.group(0).replace("{", "(").replace("}", ")"), expr)
    found: list[tuple[str, dict[str, str]]] = []
    for match in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}", text):
        # Braces inside quoted values were masked (same length), so the span is the original's.
        inside = expr[match.start(2) : match.end(2)]
        matchers = dict(
            (m.group(1), m.group(2))
            for m in re.finditer(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*")', inside)
        )
        found.append((match.group(1), matchers))
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", bare)
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    selected = {name for name, _ in found}
    for match in re.finditer(r"(?<![a-zA-Z0-9_:.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", bare):
        name = match.group(1)
        if name not in _KEYWORDS and name not in selected:
            found.append((name, {}))
    return found


def test_selectors_sees_every_metric() -> None:
    expr = (
        'sum by (handler) (rate(a_total{job="mixer", x=~"{y}"}[5m])) / on (handler) b + 0.99 * c{} and bool d'
    )
    assert [name for name, _ in selectors(expr)] == ["a_total", "c", "b", "d"]
    assert selectors(expr)[0][1] == {"job": '"mixer"', "x": '"{y}"'}


# -- the scrape config ---------------------------------------------------------------------------


def test_scrape_config_is_valid() -> None:
    done = promtool("check", "config", str(SCRAPE_CONFIG))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_a_broken_scrape_config_is_refused(tmp_path: Path) -> None:
    shutil.copy2(ALERTS, tmp_path / ALERTS.name)
    broken = SCRAPE_CONFIG.read_text("utf-8").replace("type: SRV", "type: SVR", 1)
    (tmp_path / "prometheus.yml").write_text(broken, "utf-8")
    done = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert done.returncode != 0


def test_scrape_jobs_find_the_service_ports() -> None:
    """The SRV names are the headless Service's named ports: `_<port>._tcp.<service>.<namespace>.svc...`."""
    config = yaml.safe_load(SCRAPE_CONFIG.read_text("utf-8"))
    services = {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all(SERVICES.read_text("utf-8"))}
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"mixer", "istio-mesh"}
    for job, port in (("mixer", "http-admin"), ("istio-mesh", "http-metrics")):
        (sd,) = jobs[job]["dns_sd_configs"]
        (name,) = sd["names"]
        match = re.fullmatch(r"_([a-z-]+)\._tcp\.([a-z-]+)\.([a-z-]+)\.svc\.cluster\.local", name)
        assert match, name
        assert match.group(1) == port
        service = services[match.group(2)]
        assert service["spec"]["clusterIP"] == "None", "SRV records per pod need a headless Service"
        assert service["metadata"]["namespace"] == match.group(3)
        assert port in {p["name"] for p in service["spec"]["ports"]}
    assert config["rule_files"] == [ALERTS.name]


# -- the alert rules -----------------------------------------------------------------------------


def _alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text("utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_alert_rules_are_valid() -> None:
    done = promtool("check", "rules", str(ALERTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(_alert_rules())} rules found" in done.stdout


def test_alert_rules_pass_their_unit_tests() -> None:
    done = promtool("test", "rules", str(ALERT_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text("utf-8"))["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    alerts = {rule["alert"] for rule in _alert_rules()}
    assert firing == alerts
    # An alert on a counter or a gauge that should not fire is also tested quiet, in the same series
    # or another instance's (promtool compares the full list of alerts, so extra firings fail too).
    assert quiet >= alerts - {
        "MixerShedding",
        "MixerDeliveryCircuitOpen",
        "MixerSpoolFillingUp",
        "MixerRecordsDropped",
    }


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("> 5000", "> 7000"),  # the backlog alert no longer fires on 6000 records
        ("> 0.01", "> 0.5"),  # shedding and quota failure ratios
        ("for: 15m", "for: 45m"),  # spool growth
        ('result="failure"', 'result="success"'),
    ],
)
def test_the_unit_tests_catch_a_changed_rule(tmp_path: Path, old: str, new: str) -> None:
    rules = ALERTS.read_text("utf-8")
    assert old in rules
    (tmp_path / ALERTS.name).write_text(rules.replace(old, new), "utf-8")
    shutil.copy2(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    done = promtool("test", "rules", str(tmp_path / ALERT_TESTS.name))
    assert done.returncode != 0, done.stdout


# -- the dashboard -------------------------------------------------------------------------------


def _panels() -> Iterator[dict[str, Any]]:
    def walk(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in panels:
            if panel["type"] == "row":
                yield from walk(panel.get("panels", []))
            else:
                yield panel

    yield from walk(json.loads(DASHBOARD.read_text("utf-8"))["panels"])


def _queries() -> list[tuple[str, str]]:
    """(panel title / refId, expression with the Grafana variables given values)."""
    out = []
    for panel in _panels():
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"{panel['title']}: a variable the test does not know: {expr}"
            out.append((f"{panel['title']} / {target['refId']}", expr))
    return out


def _check_as_recording_rules(directory: Path, exprs: list[str]) -> subprocess.CompletedProcess[str]:
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:query{i}", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    path = directory / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False), "utf-8")
    return promtool("check", "rules", str(path))


def test_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text("utf-8"))
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "instance"}
    for panel in _panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    queries = _queries()
    done = _check_as_recording_rules(tmp_path, [expr for _, expr in queries])
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(queries)} rules found" in done.stdout
    # The same harness refuses a query that does not parse.
    broken = _check_as_recording_rules(tmp_path, [queries[0][1].replace(")", "", 1)])
    assert broken.returncode != 0


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    return collect(tmp_path_factory.mktemp("exported"))


def test_the_collected_metrics_include_the_event_driven_ones(exported: Exported) -> None:
    for name in (
        "istio_requests_total",
        "istio_tcp_connections_closed_total",
        "mixer_handler_overloaded_total",
        "mixer_delivery_dropped_total",
        "mixer_redisquota_allocations_total",
        "mixer_delivery_dead_lettered_total",
    ):
        assert name in exported.names, name


def _labels_of(exported: Exported, name: str) -> set[str]:
    """Label names on the samples of ``name`` in either exposition."""
    labels: set[str] = set()
    for text in (exported.server_text, exported.adapter_text):
        for line in text.splitlines():
            if line.startswith(name + "{"):
                labels |= set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', line[len(name) :]))
    return labels


def _assert_exported(exported: Exported, where: str, expr: str) -> None:
    for name, matchers in selectors(expr):
        if name in SCRAPE_SERIES:
            continue
        assert name in exported.names, f"{where}: {name} is not exported by the server or the adapter"
        job = matchers.get("job")
        if job == '"mixer"':
            assert name in exported.server, f"{where}: {name} is not on the server's /metrics (job mixer)"
        elif job == '"istio-mesh"':
            assert name in exported.adapter, (
                f"{where}: {name} is not on the adapter's endpoint (job istio-mesh)"
            )
        missing = set(matchers) - TARGET_LABELS - _labels_of(exported, name)
        assert not missing, f"{where}: {name} has no label {sorted(missing)}"


def test_dashboard_queries_name_exported_metrics(exported: Exported) -> None:
    for where, expr in _queries():
        _assert_exported(exported, where, expr)


def test_alert_expressions_name_exported_metrics(exported: Exported) -> None:
    for rule in _alert_rules():
        _assert_exported(exported, rule["alert"], rule["expr"])


def test_the_dashboard_shows_every_istio_metric(exported: Exported) -> None:
    shown = {name for _, expr in _queries() for name, _ in selectors(expr)}
    istio = {name for name in exported.adapter if name.startswith("istio_")}
    # A histogram is shown through its buckets.
    missing = {
        name for name in istio if name not in shown and re.sub(r"_(sum|count)$", "_bucket", name) not in shown
    }
    assert not missing, sorted(missing)


@pytest.mark.parametrize(
    "expr",
    [
        'rate(mixer_no_such_thing_total{job="mixer"}[5m])',  # not exported at all
        'rate(mixer_requests_total{job="istio-mesh"}[5m])',  # exported, but not where the job scrapes
        'rate(istio_requests_total{job="mixer"}[5m])',
        'rate(mixer_requests_total{job="mixer", handler="x"}[5m])',  # a label the metric lacks
        "sum(mixer_nothing_here)",
    ],
)
def test_the_exported_check_refuses_what_is_not_there(exported: Exported, expr: str) -> None:
    with pytest.raises(AssertionError):
        _assert_exported(exported, "probe", expr)
