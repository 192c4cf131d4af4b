"""The short forms of the benches that need no backend program run and print their figures (which
are not asserted: speed is measured by `make bench`, side by side, on a quiet machine)."""

from __future__ import annotations

from tests.bench._run import FIGURE, figures, positive, run_bench


def test_wire_decode() -> None:
    out = run_bench("wire_decode.py", "--seconds", "0.2")
    rates = figures(
        rf"^decode \((compiled|pure Python)\):\s+({FIGURE}) records/s\s+({FIGURE}) us/record$", out
    )
    # Both decoders, in one run: the install builds the compiled one.
    assert [name for name, _, _ in rates] == ["compiled", "pure Python"], out
    assert all(positive(rate) > 0 and positive(us) > 0 for _, rate, us in rates)


def test_runtime_dispatch() -> None:
    out = run_bench("runtime_dispatch.py", "--seconds", "0.2", "--rounds", "1")
    found = figures(rf"^(report|check)[^:]*: ({FIGURE}) (?:records|calls)/s$", out)
    assert {kind for kind, _ in found} == {"report", "check"}, out
    assert all(positive(rate) > 0 for _, rate in found)


def test_access_log_line() -> None:
    out = run_bench("access_log_line.py", "--seconds", "0.1", "--rounds", "1")
    names = r"json module \(reference\)|orjson bytes \(shared\)|compiled line \(mixer\._cline\)"
    per_line = figures(rf"^({names}): ({FIGURE}) us per line", out)
    assert [name for name, _ in per_line] == [
        "json module (reference)",
        "orjson bytes (shared)",
        "compiled line (mixer._cline)",
    ], out
    assert all(positive(us) > 0 for _, us in per_line)


def test_span_encoding() -> None:
    out = run_bench("span_encoding.py", "--seconds", "0.1", "--rounds", "1")
    per_span = figures(rf"^(Python path|compiled \(mixer\.spans\._cspan\)): ({FIGURE}) us per span", out)
    assert [name for name, _ in per_span] == ["Python path", "compiled (mixer.spans._cspan)"], out
    assert all(positive(us) > 0 for _, us in per_span)


def test_check_path() -> None:
    out = run_bench("check_path.py", "--seconds", "0.2", "--rounds", "1")
    per_check = figures(rf"^(compiled|Python) answer writer: ({FIGURE}) us per Check", out)
    assert [name for name, _ in per_check] == ["compiled", "Python"], out
    writing = figures(rf"^answer writing \((compiled|Python)\): ({FIGURE}) us$", out)
    assert [name for name, _ in writing] == ["compiled", "Python"], out
    assert all(positive(us) > 0 for _, us in per_check + writing)


def test_status_page() -> None:
    out = run_bench("status_page.py", "--number", "50")
    renders = figures(rf"^render (/status\S*)\s+({FIGURE}) µs$", out)
    assert "/status" in {page for page, _ in renders}, out
    assert len(renders) >= 3, out


def test_delivery_ack() -> None:
    out = run_bench("delivery_ack.py", "--seconds", "0.2", "--rounds", "1", "--records", "10")
    rows = figures(rf"^(up|down)\s+(memory|spool)\s+(normal|full)\s+({FIGURE})\s", out)
    assert {(state, ack) for state, ack, _, _ in rows} >= {("up", "spool"), ("down", "memory")}, out
    assert all(positive(rate) > 0 for *_, rate in rows)


def test_rss_soak() -> None:
    out = run_bench("rss_soak.py", "--minutes", "0.1", "--interval", "2")
    rows = figures(
        rf"^\| (supervisor|worker \d+) \| ({FIGURE}) MiB \| ({FIGURE}) MiB \| ({FIGURE}) MiB \|", out
    )
    assert [role.split()[0] for role, *_ in rows] == ["supervisor", "worker", "worker"], out
    assert all(positive(peak) > 0 for _, peak, *_ in rows)
    carried = figures(rf"records ({FIGURE})  checks ({FIGURE})", out)
    assert positive(carried[-1][0]) > 0, out
    assert positive(carried[-1][1]) > 0, out
