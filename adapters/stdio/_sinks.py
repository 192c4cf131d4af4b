"""Where stdio lines go: a standard stream, or a file rotated by size and pruned by count and age.

Sinks are blocking and called from a worker thread, one call at a time; they touch nothing
until the first write.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Protocol

_STAMP_FORMAT = "%Y-%m-%dT%H-%M-%S.%f"


class Sink(Protocol):
    def write(self, lines: Sequence[bytes]) -> None:
        """Write ``lines`` (UTF-8), each followed by a newline. :raises OSError: the write failed."""
        ...

    def close(self) -> None: ...


class StreamSink:
    """``sys.stdout`` or ``sys.stderr``, looked up at each write so redirections are honoured."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._mutex = threading.Lock()

    def write(self, lines: Sequence[bytes]) -> None:
        # One copy of the lines, the last newline from the empty item: a per-line `line + b"\n"`
        # copied every line twice (4 % of stock's samples). One buffer, so one write: workers share
        # the stream, and a line must not be split by another's.
        data = b"\n".join([*lines, b""])
        with self._mutex:
            stream = getattr(sys, self._name)
            buffer = getattr(stream, "buffer", None)
            if buffer is None or str(getattr(stream, "encoding", "")).lower().replace("-", "") != "utf8":
                # A stream replaced by text-only one (a test's capture), or one in another encoding.
                stream.write(data.decode("utf-8", "replace"))
                stream.flush()
                return
            # The lines are UTF-8 already: decoding them for the text layer to encode them again
            # cost more than the write. Text written to the stream before goes out first.
            stream.flush()
            buffer.write(data)
            buffer.flush()

    def close(self) -> None:
        # The process's standard streams outlive any handler.
        return


class RotatingFileSink:
    """Appends to ``path``; before a line would take it past ``max_bytes`` the file is renamed to
    ``<stem>-<UTC time><suffix>`` (as Mixer's lumberjack does) and a new one is started.

    :param max_bytes: rotation size; 0 never rotates.
    :param max_backups: rotated files to keep; 0 keeps all.
    :param max_age_days: rotated files older than this are deleted; 0 keeps them.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        max_backups: int,
        max_age_days: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._max_bytes = max_bytes
        self._max_backups = max_backups
        self._max_age = max_age_days * 86400
        self._clock = clock
        self._file: BinaryIO | None = None
        self._size = 0
        self._mutex = threading.Lock()
        self._backup_pattern = re.compile(
            rf"{re.escape(path.stem)}-(\d{{4}}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{{6}})(?:-(\d+))?{re.escape(path.suffix)}"
        )

    def write(self, lines: Sequence[bytes]) -> None:
        with self._mutex:
            file = self._file or self._open()
            if self._max_bytes:
                # Other processes (workers) may append to the same file: count what is there.
                self._size = os.fstat(file.fileno()).st_size
            chunk: list[bytes] = []
            pending = 0
            for line in lines:
                data = line + b"\n"
                # A line larger than max_bytes still gets a file of its own rather than being lost.
                size = self._size + pending
                if self._max_bytes and size and size + len(data) > self._max_bytes:
                    self._append(file, chunk)
                    chunk, pending = [], 0
                    file = self._rotate_if_full(file, len(data))
                chunk.append(data)
                pending += len(data)
            self._append(file, chunk)

    def _append(self, file: BinaryIO, chunk: list[bytes]) -> None:
        """One write of whole lines to a file opened for appending: the processes of ``mixer serve
        --workers`` appending to the same file never interleave within a line."""
        if not chunk:
            return
        data = memoryview(b"".join(chunk))
        while data:
            written = file.write(data)
            data = data[written or 0 :]
        self._size += sum(len(part) for part in chunk)

    def _rotate_if_full(self, file: BinaryIO, incoming: int) -> BinaryIO:
        # Other processes append to the same file, and one of them may have rotated it already.
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            return self._reopen()
        mine = os.fstat(file.fileno())
        if (current.st_dev, current.st_ino) != (mine.st_dev, mine.st_ino):
            return self._reopen()
        self._size = mine.st_size
        if self._size and self._size + incoming > self._max_bytes:
            return self._rotate()
        return file

    def _reopen(self) -> BinaryIO:
        if self._file is not None:
            self._file.close()
            self._file = None
        return self._open()

    def close(self) -> None:
        with self._mutex:
            if self._file is not None:
                self._file.close()
                self._file = None

    def backups(self) -> list[Path]:
        """Rotated files, oldest first."""
        found: list[tuple[str, int, Path]] = []
        for entry in self.path.parent.iterdir():
            match = self._backup_pattern.fullmatch(entry.name)
            if match:
                found.append((match.group(1), int(match.group(2) or 0), entry))
        return [path for *_, path in sorted(found)]

    def _open(self) -> BinaryIO:
        # Unbuffered: each _append is one write(2) on an O_APPEND descriptor.
        self._file = self.path.open("ab", buffering=0)
        self._size = os.fstat(self._file.fileno()).st_size
        return self._file

    def _rotate(self) -> BinaryIO:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.path.exists():
            os.replace(self.path, self._backup_path())
        self._prune()
        return self._open()

    def _backup_path(self) -> Path:
        stamp = datetime.fromtimestamp(self._clock(), UTC).strftime(_STAMP_FORMAT)
        candidate = self.path.with_name(f"{self.path.stem}-{stamp}{self.path.suffix}")
        counter = 0
        while candidate.exists():
            counter += 1
            candidate = self.path.with_name(f"{self.path.stem}-{stamp}-{counter}{self.path.suffix}")
        return candidate

    def _prune(self) -> None:
        backups = self.backups()
        if self._max_backups and len(backups) > self._max_backups:
            for old in backups[: -self._max_backups]:
                old.unlink(missing_ok=True)
            backups = backups[-self._max_backups :]
        if self._max_age:
            cutoff = self._clock() - self._max_age
            for backup in backups:
                try:
                    if backup.stat().st_mtime < cutoff:
                        backup.unlink()
                except FileNotFoundError:
                    continue
