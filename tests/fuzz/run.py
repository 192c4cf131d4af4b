"""Run the fuzz targets under atheris (libFuzzer), each in a process of its own.

    python -m tests.fuzz.run --all --runs 100000     # every target, one after the other
    python -m tests.fuzz.run expression --runs 5000  # one target, in this process

A target fails on a crash, an input that takes over ``--timeout`` seconds of CPU time (a
:class:`SlowInput`), or an exception other than its documented ones (tests/fuzz/targets.py);
libFuzzer then writes the input to ``--artifacts`` (crash-*; timeout-* for an input still running
after HANG_SECONDS of wall-clock time) and the run exits non-zero. The limit is CPU time because the
machines this runs on are shared: a wall-clock second is not a measure of the input. New coverage-increasing inputs go
to a scratch directory, so the committed seed corpus (tests/fuzz/corpus/<target>) stays as it is;
``--keep DIR`` keeps them in DIR/<target> instead.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
#: libFuzzer dictionaries (tokens of the input language) for the targets that mutate bytes.
DICTS = HERE / "dicts"
REPO = HERE.parent.parent
#: The package names whose code atheris instruments for coverage feedback.
INSTRUMENTED = ["mixer", "plugins", "adapters"]
#: Bytes in one input: the largest seed (a deploy/config file) with room to grow.
MAX_LEN = 16384
#: Wall-clock seconds after which libFuzzer gives up on an input (the machine may be loaded, so
#: the per-input limit proper is measured in CPU time).
HANG_SECONDS = 20
_DONE = re.compile(rb"Done (\d+) runs in (\d+) second")


class SlowInput(Exception):
    """One input took more CPU time than ``--timeout``: a hang, or worse than linear work."""


@dataclass(frozen=True, slots=True)
class Result:
    target: str
    returncode: int
    runs: int | None
    seconds: float
    output: bytes

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.runs is not None


def target_names() -> list[str]:
    # Read from the corpus layout so the parent process need not import (and load) the targets.
    return sorted(p.name for p in CORPUS.iterdir() if p.is_dir())


def fuzz_one(target: str, runs: int, timeout: int, max_total_time: int, work: Path, artifacts: Path) -> None:
    """Fuzz ``target`` in this process (never returns: libFuzzer exits)."""
    import atheris
    from atheris.import_hook import instrument_imports

    with instrument_imports(include=INSTRUMENTED):
        from tests.fuzz.targets import TARGETS

    chosen = TARGETS[target]
    run = chosen.run
    # Lazy set-up (the config target's adapter registry) happens here, not in the first timed input.
    run(b"")
    cpu = time.process_time

    def one_input(data: bytes) -> None:
        started = cpu()
        run(data)
        spent = cpu() - started
        if spent > timeout:
            raise SlowInput(f"one input took {spent:.2f} s of CPU (the limit is {timeout} s)")

    mutator = None
    if chosen.message is not None:
        from tests.fuzz.proto_mutator import make_mutator

        mutator = make_mutator(chosen.message)
    work.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.argv[0],
        f"-runs={runs}",
        # The wall-clock backstop for an input that never returns; --timeout is checked in CPU time.
        f"-timeout={max(HANG_SECONDS, timeout)}",
        f"-max_total_time={max_total_time}",
        f"-artifact_prefix={artifacts}{os.sep}",
        f"-max_len={MAX_LEN}",
        "-print_final_stats=1",
        # New inputs land in the first directory; the committed seeds are only read.
        str(work),
        str(CORPUS / target),
    ]
    dictionary = DICTS / f"{target}.dict"
    if dictionary.exists():
        argv.insert(1, f"-dict={dictionary}")
    atheris.Setup(argv, one_input, custom_mutator=mutator)
    atheris.Fuzz()


def run_in_subprocess(
    target: str,
    runs: int,
    timeout: int,
    max_total_time: int,
    artifacts: Path,
    keep: Path | None,
    wall_limit: float | None = None,
) -> Result:
    """Fuzz ``target`` in a child process; the libFuzzer log is in ``Result.output``."""
    with tempfile.TemporaryDirectory(prefix=f"mixer-fuzz-{target}-") as scratch:
        work = keep / target if keep is not None else Path(scratch)
        command = [
            sys.executable,
            "-m",
            "tests.fuzz.run",
            target,
            f"--runs={runs}",
            f"--timeout={timeout}",
            f"--max-total-time={max_total_time}",
            f"--artifacts={artifacts / target}",
            f"--work={work}",
        ]
        started = time.monotonic()
        done = subprocess.run(command, cwd=REPO, capture_output=True, timeout=wall_limit, check=False)
        seconds = time.monotonic() - started
    output = done.stdout + done.stderr
    found = _DONE.search(output)
    return Result(target, done.returncode, int(found.group(1)) if found else None, seconds, output)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("target", nargs="?", help="one target (see --list); runs in this process")
    parser.add_argument("--all", action="store_true", help="every target, each in its own process")
    parser.add_argument("--list", action="store_true", help="print the targets and exit")
    parser.add_argument("--runs", type=int, default=100_000, help="inputs per target (default 100000)")
    parser.add_argument("--timeout", type=int, default=1, help="CPU seconds one input may take (default 1)")
    parser.add_argument(
        "--max-total-time", type=int, default=3600, help="seconds per target before giving up (default 3600)"
    )
    parser.add_argument("--artifacts", type=Path, default=REPO / "build" / "fuzz" / "artifacts")
    parser.add_argument("--work", type=Path, help="where a single target writes new inputs")
    parser.add_argument(
        "--keep", type=Path, help="with --all: keep each target's new inputs in KEEP/<target>"
    )
    parser.add_argument("--jobs", type=int, default=1, help="with --all: targets fuzzed at once (default 1)")
    args = parser.parse_args(argv)

    if args.list:
        from tests.fuzz.targets import TARGETS

        for name, target in TARGETS.items():
            print(f"{name:16} {target.summary}")
        return 0
    if args.target and not args.all:
        if args.target not in target_names():
            parser.error(f"unknown target {args.target!r}; choose from {', '.join(target_names())}")
        work = args.work or Path(tempfile.mkdtemp(prefix=f"mixer-fuzz-{args.target}-"))
        fuzz_one(args.target, args.runs, args.timeout, args.max_total_time, work, args.artifacts)
        return 0  # pragma: no cover - libFuzzer exits the process
    if not args.all:
        parser.error("name a target or pass --all")

    failed = []
    print(f"{'target':16} {'runs':>8} {'seconds':>8}  result", flush=True)
    artifacts = args.artifacts.resolve()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [
            pool.submit(
                run_in_subprocess, name, args.runs, args.timeout, args.max_total_time, artifacts, args.keep
            )
            for name in target_names()
        ]
        for future in futures:
            result = future.result()
            status = "ok" if result.ok else f"FAILED (exit {result.returncode})"
            runs = "?" if result.runs is None else str(result.runs)
            print(f"{result.target:16} {runs:>8} {result.seconds:8.1f}  {status}", flush=True)
            if not result.ok:
                failed.append(result)
    for result in failed:
        sys.stderr.write(f"\n--- {result.target}: last lines of the libFuzzer log ---\n")
        sys.stderr.write(b"\n".join(result.output.splitlines()[-60:]).decode("utf-8", "replace") + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
