"""bench/stages.py: py-spy's collapsed stacks counted by the innermost stage on each stack."""

from __future__ import annotations

from pathlib import Path

from tests.bench._run import FIGURE, figures, run_bench

STACKS = """\
MainThread;run (asyncio/runners.py:118);_run (asyncio/events.py:84);report (mixer/runtime/_report.py:40);line (mixer/encoding.py:300) 30
MainThread;run (asyncio/runners.py:118);report (mixer/runtime/_report.py:40);build (<mixer-generated-3>:5) 50
MainThread;run_server (mixer/server/_app.py:326);run (asyncio/runners.py:118);_run (asyncio/events.py:84) 15
MainThread;handler (grpc/aio/_server.py:10);decode_report (mixer/wire/_decode.py:90) 5
not a stack line
"""


def test_samples_go_to_the_innermost_stage(tmp_path: Path) -> None:
    stacks = tmp_path / "stacks.txt"
    stacks.write_text(STACKS)
    out = run_bench("stages.py", str(stacks), "--per-cpu-second", "10000")
    rows = {
        stage: (share, us)
        for stage, share, us in figures(rf"^\| ([^|]+?) \| ({FIGURE}%) \| ({FIGURE}) \|$", out)
    }
    assert "100 samples" in out, out
    # 10,000 records per CPU-second: 100 us a record, split as the samples are.
    assert rows["instance building (generated functions, templates)"] == ("50.0%", "50.0"), out
    assert rows["access-log line (shared encoder)"] == ("30.0%", "30.0"), out
    assert rows["wire: decode requests, encode answers"] == ("5.0%", "5.0"), out
    assert rows["event loop (with gRPC's compiled core), threads, logging (no stage on the stack)"] == (
        "15.0%",
        "15.0",
    ), out
    assert "rule matching and dispatch" not in rows, out
    assert "| total | 100 % | 100.0 |" in out, out
