"""What the status page costs: its recorders on the Check path, and one sample and render.

- the denial ring's ``record`` (every denied Check) and the busiest-subjects count (every plan
  check): a known subject, and a new subject when the count is full (the bounded worst case);
- one sample of the series and one render of each view, on a server's metrics registry with no
  runtime (the delivery families are those of this process).

    .venv/bin/python bench/status_page.py [--number 100000]
"""

from __future__ import annotations

import argparse
import itertools
import timeit

from mixer.server._http import AdminState
from mixer.server._metrics import ServerMetrics
from mixer.server._status import _RENDER, StatusBoard
from mixer.statusboard import DenialRing, TopSubjects


def per_call(fn: object, number: int) -> float:
    return timeit.timeit(fn, number=number) / number * 1e6  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=100_000)
    number = parser.parse_args().number
    ring = DenialRing()
    top = TopSubjects()
    fresh = itertools.count()
    for name, fn, n in (
        ("denial record", lambda: ring.record("check", "PERMISSION_DENIED", "h: no"), number),
        ("subject count, known", lambda: top.count("gold", "alice", denied=False), number),
        (
            "subject count, new (full)",
            lambda: top.count("free", f"s{next(fresh)}", denied=False),
            number // 10,
        ),
        ("denials view (50 redacted)", ring.recent, 1000),
    ):
        print(f"{name:<28} {per_call(fn, n):9.2f} µs")
    board = StatusBoard(AdminState(ServerMetrics(lambda: None)))
    print(f"{'one sample':<28} {per_call(board.sample, 1000):9.2f} µs")
    for path, (_, view, render) in _RENDER.items():
        cost = per_call(lambda view=view, render=render: render(board, view(board)), 1000)
        print(f"{'render /status' + path:<28} {cost:9.2f} µs")


if __name__ == "__main__":
    main()
