"""The dead letter: records a backend refused for good, kept as JSON lines for an operator."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from mixer.delivery._types import Record

__all__ = ["DEAD_LETTER_FILE", "DeadLetterFile"]

DEAD_LETTER_FILE: Final = "dead-letter.jsonl"
ROTATED_FILE: Final = "dead-letter.1.jsonl"


class DeadLetterFile:
    """``<dir>/dead-letter.jsonl``, one JSON object per record, at most ``max_bytes`` on disk in all.

    The current file grows to half of ``max_bytes``, then replaces ``dead-letter.1.jsonl``; the
    records of the file replaced that way are lost and counted. Used from the spool thread only.
    """

    def __init__(self, directory: Path, handler: str, max_bytes: int) -> None:
        self.path = directory / DEAD_LETTER_FILE
        self.rotated = directory / ROTATED_FILE
        self._handler = handler
        self._limit = max(1, max_bytes // 2)

    def write(self, items: Sequence[tuple[Record, str]], now: float) -> tuple[int, int]:
        """Append one line per ``(record, reason)``; returns ``(written, dropped)``.

        ``dropped`` counts the lines of a rotated-away file and lines too big for the bound.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        stamp = datetime.fromtimestamp(now, UTC).isoformat()
        lines: list[bytes] = []
        dropped = 0
        for record, reason in items:
            line = self._line(record, reason, stamp)
            if len(line) > self._limit:
                dropped += 1
                continue
            lines.append(line)
        written = 0
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        pending: list[bytes] = []
        for line in lines:
            if size + len(line) > self._limit:
                self._append(pending)
                written += len(pending)
                pending = []
                dropped += self._rotate()
                size = 0
            pending.append(line)
            size += len(line)
        self._append(pending)
        written += len(pending)
        return written, dropped

    def _line(self, record: Record, reason: str, stamp: str) -> bytes:
        obj = {
            "time": stamp,
            "handler": self._handler,
            "reason": reason,
            "route": record.route,
            "key": None if record.key is None else base64.b64encode(record.key).decode("ascii"),
            "payload": base64.b64encode(record.payload).decode("ascii"),
        }
        return json.dumps(obj, separators=(",", ":")).encode() + b"\n"

    def _append(self, lines: list[bytes]) -> None:
        if lines:
            with self.path.open("ab") as out:
                out.write(b"".join(lines))

    def _rotate(self) -> int:
        lost = 0
        try:
            with self.rotated.open("rb") as old:
                while block := old.read(1 << 20):
                    lost += block.count(b"\n")
        except FileNotFoundError:
            pass
        if self.path.exists():
            os.replace(self.path, self.rotated)
        return lost
