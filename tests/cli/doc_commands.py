"""The shell examples of the docs, each block marked with the server it runs against.

Every ```sh block of README.md and docs/*.md that runs ``mixer``, ``curl`` or ``grpcurl`` follows a
marker line:

- ``<!-- run: embedded -->``: against ``mixer serve`` with the embedded default (no ``--config``);
- ``<!-- run: config PATH -->``: against ``mixer serve --config PATH`` (PATH from the repository root);
- ``<!-- run: local -->``: commands that need no server (``mixer eval``, ``validate``, ...);
- ``<!-- run: skip REASON -->``: not run (it starts a server itself, or needs what tests lack).

Each command line (``\\`` continuations joined) runs in bash from the repository root, with the
default addresses (gRPC 127.0.0.1:9091, HTTP 127.0.0.1:9093, admin 127.0.0.1:9094, Prometheus 127.0.0.1:42422) replaced by
the test server's. A trailing comment states what the line must do when it is not "exit 0 and, for
``mixer check``, every answer OK": ``# exit 3``, and/or a gRPC code name (``# UNAUTHENTICATED``)
for the status of every answer ``mixer check`` prints.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from mixer.status import Code

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DEFAULT_GRPC = "127.0.0.1:9091"
DEFAULT_HTTP = "127.0.0.1:9093"
DEFAULT_ADMIN = "127.0.0.1:9094"
DEFAULT_PROMETHEUS = "127.0.0.1:42422"
SERVERS = ("embedded", "config", "local")

_BLOCK = re.compile(
    r"(?:^<!-- run: (?P<marker>[^\n]*?) -->\n)?^```(?:sh|bash)\n(?P<body>.*?)^```", re.M | re.S
)
_RUNS = re.compile(r"^\s*(?:[A-Z_]+=\S+\s+)*(?:mixer|curl|grpcurl)\b", re.M)
_COMMENT = re.compile(r"\s+#\s+(?P<text>[^'\"]*)$")
_ASSIGNMENT = re.compile(r"^[a-z_]+=\$\(")
_CODES = {code.name for code in Code}
#: Lines that set up a shell rather than run an example.
_SETUP = (". .venv/bin/activate",)


@dataclass(frozen=True)
class Command:
    text: str
    exit_code: int = 0
    status: str | None = "OK"


@dataclass(frozen=True)
class Block:
    doc: str
    line: int
    server: str
    commands: tuple[Command, ...]
    prelude: tuple[str, ...] = field(default=())

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def _command(text: str) -> Command:
    comment = _COMMENT.search(text)
    exit_code = 0
    status: str | None = "OK"
    if comment is not None:
        words = re.findall(r"[A-Za-z_]+|\d+", comment.group("text"))
        for index, word in enumerate(words):
            if word == "exit" and index + 1 < len(words) and words[index + 1].isdigit():
                exit_code = int(words[index + 1])
            elif word in _CODES:
                status = word
    if not re.match(r"\s*mixer check\b", text):
        status = None
    return Command(text, exit_code, status)


def marker_problems(doc: Path) -> list[str]:
    """Shell blocks of ``doc`` that run something without a well-formed marker."""
    source = doc.read_text("utf-8")
    where = str(doc.relative_to(ROOT))
    problems: list[str] = []
    for match in _BLOCK.finditer(source):
        if not _RUNS.search(match.group("body")):
            continue
        line = source.count("\n", 0, match.start("body"))
        marker = match.group("marker")
        if marker is None:
            problems.append(f"{where}:{line}: a shell example needs a <!-- run: ... --> marker")
            continue
        words = marker.split()
        if words[:1] == ["skip"]:
            if len(words) < 2:
                problems.append(f"{where}:{line}: say why the example is skipped")
        elif words[:1] == [] or words[0] not in SERVERS:
            problems.append(f"{where}:{line}: unknown server in {marker!r} (want one of {SERVERS} or skip)")
        elif words[0] == "config" and (len(words) != 2 or not (ROOT / words[1]).exists()):
            problems.append(f"{where}:{line}: {marker!r}: want config PATH, an existing path")
    return problems


def blocks(doc: Path) -> list[Block]:
    """The shell blocks of ``doc`` marked to run (see :func:`marker_problems` for the others)."""
    source = doc.read_text("utf-8")
    where = str(doc.relative_to(ROOT))
    found: list[Block] = []
    for match in _BLOCK.finditer(source):
        body = match.group("body")
        marker = match.group("marker")
        if not _RUNS.search(body) or marker is None or marker.split()[:1] == ["skip"]:
            continue
        server = " ".join(marker.split())
        line = source.count("\n", 0, match.start("body"))
        commands: list[Command] = []
        prelude: list[str] = []
        for text in body.replace("\\\n", " ").splitlines():
            stripped = text.strip()
            if not stripped or stripped.startswith("#") or stripped in _SETUP:
                continue
            if _ASSIGNMENT.match(stripped):
                prelude.append(stripped)
                continue
            commands.append(_command(stripped))
        found.append(Block(where, line, server, tuple(commands), tuple(prelude)))
    return found


def all_blocks() -> list[Block]:
    return [block for doc in DOCS for block in blocks(doc)]


@dataclass(frozen=True)
class Addresses:
    grpc: str = DEFAULT_GRPC
    http: str = DEFAULT_HTTP
    admin: str = DEFAULT_ADMIN
    prometheus: str = DEFAULT_PROMETHEUS


def _script(block: Block, command: Command, addresses: Addresses) -> str:
    text = (
        command.text.replace(DEFAULT_GRPC, addresses.grpc)
        .replace(DEFAULT_HTTP, addresses.http)
        .replace(DEFAULT_ADMIN, addresses.admin)
        .replace(DEFAULT_PROMETHEUS, addresses.prometheus)
    )
    # `mixer check` and `mixer report` default to 127.0.0.1:9091: point them at the test server
    # (a --server in the example itself was rewritten above; the last --server wins).
    function = (
        'mixer() { case "$1" in check|report) command mixer "$@" --server "$MIXER_DOC_GRPC" ;; '
        '*) command mixer "$@" ;; esac; }'
    )
    return "\n".join(["set -o pipefail", function, *block.prelude, text])


def run(block: Block, command: Command, addresses: Addresses, *, retry_for: float = 0.0) -> None:
    """Run ``command`` and assert what its comment says; ``curl`` lines are retried for a while,
    since what a Report feeds reaches an endpoint asynchronously."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "MIXER_DOC_GRPC": addresses.grpc,
    }
    deadline = time.monotonic() + (retry_for if command.text.startswith("curl") else 0.0)
    while True:
        done = subprocess.run(
            ["bash", "-c", _script(block, command, addresses)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=ROOT,
            env=env,
        )
        if done.returncode == command.exit_code or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    where = f"{block.id}: {command.text}"
    assert done.returncode == command.exit_code, (
        f"{where}\nexit {done.returncode}, want {command.exit_code}\n{done.stdout}\n{done.stderr}"
    )
    if command.status is None:
        return
    answers = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    statuses = [a["status"]["code"] for a in answers if isinstance(a.get("status"), dict)]
    assert all(s == command.status for s in statuses), f"{where}\nanswers {statuses}, want {command.status}"
    if "--quiet" not in command.text:
        assert statuses, f"{where}\nno answer printed:\n{done.stdout}"
