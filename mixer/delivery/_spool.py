"""The durable spool: records that cannot be sent or kept in memory, in SQLite on local disk.

:class:`SpoolStore` is used from one thread only (the Delivery's spool thread), so it needs no
locks. Rows are read in ``id`` order, and ids are offer order: the caller numbers every record it
accepts (``seq``, counting up from 1 in each process) and a row's id is ``base + seq``, where
``base`` is the largest id in the file when it was opened. So the records of an earlier run come
first, and a record written late (a batch that failed after newer records were spooled) still
takes its place in offer order.

A row stays on disk until the backend accepted it (:meth:`SpoolStore.ack`): rows that were
read but not acknowledged are *held* and skipped by later reads until they are acknowledged or
released. Held state lives in memory only, so after a restart every row is read again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final, Literal

from mixer.delivery._types import Record

__all__ = ["SPOOL_FILE", "SpoolLock", "SpoolStore"]

SPOOL_FILE: Final = "spool.sqlite3"
LOCK_FILE: Final = "spool.lock"

# Record bytes as Record.size counts them (route in UTF-8); literal SQL only, no string building.
_COUNT_SQL: Final = (
    "SELECT count(*), "
    "coalesce(sum(length(payload) + length(CAST(route AS BLOB)) + coalesce(length(key), 0)), 0) FROM spool"
)
_SIZES_FROM_SQL: Final = (
    "SELECT id, length(payload) + length(CAST(route AS BLOB)) + coalesce(length(key), 0) FROM spool "
    "WHERE id > ? ORDER BY id LIMIT ?"
)
_ROWS_FROM_SQL: Final = "SELECT id, route, key, payload FROM spool WHERE id > ? ORDER BY id LIMIT ?"
_DELETE_SQL: Final = "DELETE FROM spool WHERE id = ?"
_DELETE_RANGE_SQL: Final = "DELETE FROM spool WHERE id BETWEEN ? AND ?"
#: Free pages the file may keep before a drained spool gives them back (a write-ahead spool
#: drains many times a second; vacuuming each time would cost more than the space is worth).
_SHRINK_FREE_PAGES: Final = 4096
#: Rows per SELECT while reading or trimming; big enough to amortise a query, small enough to stop early.
_SCAN_CHUNK: Final = 1024
#: Below every id.
_BEFORE_ALL: Final = -(2**63)


class SpoolLock:
    """An exclusive ``flock`` on ``<dir>/spool.lock``: one Delivery owns a spool at a time.

    ``flock`` locks belong to an open file, so this excludes another process and also another
    Delivery of this process (a handler that a reload replaces still runs when its successor starts).
    """

    def __init__(self, directory: Path) -> None:
        self._path = directory / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            # Closing the descriptor drops the lock.
            os.close(fd)


class SpoolStore:
    """One table ``spool(id INTEGER PRIMARY KEY, route, key, payload, enqueued_at)`` in WAL mode.

    ``synchronous`` is SQLite's setting: ``normal`` (WAL fsynced only at checkpoints) makes a
    committed write survive the process being killed (it is in the WAL through the OS), not
    necessarily a power failure or an OS crash; ``full`` fsyncs the WAL at every commit, so a
    committed write survives those too. ``rows`` and ``bytes`` (record bytes as
    :meth:`Record.size` counts them) are exact for this store's own writes.
    """

    def __init__(self, path: Path, *, synchronous: Literal["normal", "full"] = "normal") -> None:
        self.path = path
        self.synchronous = synchronous
        self.rows = 0
        self.bytes = 0
        self._conn: sqlite3.Connection | None = None
        # Rows out for sending, with their sizes: reads and trims skip them, ack deletes them.
        self._held: dict[int, int] = {}
        # Every row with id <= cursor is held or gone; reads start after it.
        self._cursor = _BEFORE_ALL
        self._base = 0

    def open(self) -> tuple[int, int]:
        """Create or open the file; returns ``(rows, bytes)`` already in it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            # Only effective on a new file; lets the file shrink when the spool has drained.
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            conn.execute("PRAGMA journal_mode=WAL")
            # Literal SQL only: the setting is one of two fixed words.
            full = self.synchronous == "full"
            conn.execute("PRAGMA synchronous=FULL" if full else "PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS spool ("
                "id INTEGER PRIMARY KEY, route TEXT NOT NULL, key BLOB, payload BLOB NOT NULL, "
                "enqueued_at REAL NOT NULL)"
            )
            rows, size = conn.execute(_COUNT_SQL).fetchone()
            (highest,) = conn.execute("SELECT max(id) FROM spool").fetchone()
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self.rows, self.bytes = int(rows), int(size)
        self._held.clear()
        self._cursor = _BEFORE_ALL
        self._base = 0 if highest is None else max(int(highest), 0)
        return self.rows, self.bytes

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"spool {self.path} is not open")
        return self._conn

    def insert(self, items: Sequence[tuple[int, Record]], now: float, *, hold: bool) -> list[int]:
        """Write ``(seq, record)`` items in one transaction; returns their ids (``base + seq``).

        ``seq`` is unique for this store's life. ``hold``: the caller keeps the records in memory
        (a batch waiting to retry), so reads skip them until they are acknowledged or released.
        """
        if hold:
            return self.write((), items, now)
        self.write(items, (), now)
        return [self._base + seq for seq, _ in items]

    def write(
        self, free: Sequence[tuple[int, Record]], held: Sequence[tuple[int, Record]], now: float
    ) -> list[int]:
        """Write ``free`` rows (read back later) and ``held`` rows (the caller keeps them in memory)
        in one transaction, so one commit covers both; returns the ids of ``held``."""
        if not free and not held:
            return []
        base = self._base
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT INTO spool (id, route, key, payload, enqueued_at) VALUES (?, ?, ?, ?, ?)",
                [(base + seq, r.route, r.key, r.payload, now) for seq, r in (*free, *held)],
            )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        self.rows += len(free) + len(held)
        self.bytes += sum(r.size() for _, r in free)
        held_ids = [base + seq for seq, _ in held]
        held_sizes = [r.size() for _, r in held]
        self.bytes += sum(held_sizes)
        self._held.update(zip(held_ids, held_sizes, strict=True))
        if free:
            # Written behind rows already read: reads must come back for it.
            self._lower_cursor(base + min(seq for seq, _ in free) - 1)
        return held_ids

    def read(self, max_records: int, max_bytes: int) -> list[tuple[int, Record]]:
        """Take the oldest rows that are not held, up to the limits (at least one), and hold them."""
        db = self._db
        out: list[tuple[int, Record]] = []
        size = 0
        cursor = self._cursor
        full = False
        while not full:
            chunk = db.execute(_ROWS_FROM_SQL, (cursor, _SCAN_CHUNK)).fetchall()
            if not chunk:
                break
            for row_id, route, key, payload in chunk:
                if row_id in self._held:
                    cursor = row_id
                    continue
                record = Record(payload=bytes(payload), route=route, key=None if key is None else bytes(key))
                record_size = record.size()
                if out and (size + record_size > max_bytes or len(out) >= max_records):
                    full = True
                    break
                out.append((row_id, record))
                self._held[row_id] = record_size
                size += record_size
                cursor = row_id
        self._cursor = cursor
        return out

    def ack(self, ids: Iterable[int]) -> None:
        """Delete held rows: the backend accepted them (or they went to the dead letter)."""
        ids = [i for i in ids if i in self._held]
        if not ids:
            return
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            # A sent batch is mostly consecutive ids: one range delete each instead of a row each.
            db.executemany(_DELETE_RANGE_SQL, _runs(ids))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        self.rows -= len(ids)
        self.bytes -= sum(self._held.pop(i) for i in ids)
        if self.rows == 0:
            self._shrink()

    def release(self, ids: Iterable[int]) -> None:
        """Held rows that were not delivered: reads return them again, in id order."""
        lowest: int | None = None
        for i in ids:
            if self._held.pop(i, None) is not None and (lowest is None or i < lowest):
                lowest = i
        if lowest is not None:
            self._lower_cursor(lowest - 1)

    def trim(self, max_bytes: int) -> tuple[int, int]:
        """Delete the oldest rows that are not held until at most ``max_bytes`` remain.

        Returns ``(rows, bytes)`` deleted. Held rows are on their way to the backend and stay.
        """
        if self.bytes <= max_bytes:
            return 0, 0
        db = self._db
        excess = self.bytes - max_bytes
        victims: list[int] = []
        freed = 0
        last = _BEFORE_ALL
        while freed < excess:
            chunk = db.execute(_SIZES_FROM_SQL, (last, _SCAN_CHUNK)).fetchall()
            if not chunk:
                break
            for row_id, size in chunk:
                last = row_id
                if row_id in self._held:
                    continue
                victims.append(row_id)
                freed += int(size)
                if freed >= excess:
                    break
        if not victims:
            return 0, 0
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(_DELETE_SQL, [(i,) for i in victims])
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        self.rows -= len(victims)
        self.bytes -= freed
        return len(victims), freed

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                # Fold the WAL back so the next open starts from one file.
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()

    def _lower_cursor(self, value: int) -> None:
        self._cursor = min(self._cursor, value)

    def _shrink(self) -> None:
        # Space is only reclaimed opportunistically; a failure leaves the spool itself intact.
        with contextlib.suppress(sqlite3.Error):
            (free,) = self._db.execute("PRAGMA freelist_count").fetchone()
            if int(free) > _SHRINK_FREE_PAGES:
                self._db.execute("PRAGMA incremental_vacuum").fetchall()


def _runs(ids: list[int]) -> list[tuple[int, int]]:
    """``ids`` as ``(first, last)`` runs of consecutive integers."""
    ordered = sorted(ids)
    runs: list[tuple[int, int]] = []
    first = last = ordered[0]
    for i in ordered[1:]:
        if i != last + 1:
            runs.append((first, last))
            first = i
        last = i
    runs.append((first, last))
    return runs
