"""A Dockerfile read into instructions: enough to check our own image's rules without a Docker engine.

Continuation lines are joined, comments and the parser directive are dropped; each instruction
keeps its stage (the index of the ``FROM`` it follows) and its arguments as written.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

_FLAG = re.compile(r"^--[a-z-]+(=\S*)?$")


@dataclass(frozen=True)
class Instruction:
    stage: int
    keyword: str
    args: str
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form ``CMD``/``ENTRYPOINT``/``HEALTHCHECK CMD``, else None."""
        text = self.args
        if self.keyword == "HEALTHCHECK":
            _, _, text = text.partition(" CMD ")
        text = text.strip()
        if not text.startswith("["):
            return None
        value = json.loads(text)
        assert isinstance(value, list)
        assert all(isinstance(v, str) for v in value)
        return value

    def flags(self) -> dict[str, str]:
        """The leading ``--name=value`` options (``COPY --from=build``, ``HEALTHCHECK --interval=5s``)."""
        out: dict[str, str] = {}
        for word in shlex.split(self.args):
            if not _FLAG.match(word):
                break
            name, _, value = word[2:].partition("=")
            out[name] = value
        return out

    def operands(self) -> list[str]:
        """The words after the leading options (``COPY a b`` -> ``["a", "b"]``)."""
        words = shlex.split(self.args)
        while words and _FLAG.match(words[0]):
            words.pop(0)
        return words


def parse(path: Path) -> list[Instruction]:
    instructions: list[Instruction] = []
    stage = -1
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text("utf-8").splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        text = " ".join(part for part in pending if part)
        pending = []
        keyword, _, args = text.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(stage, keyword, args.strip(), start))
    assert not pending, f"{path}: the last instruction ends with a line continuation"
    return instructions
