"""One scrape, every worker: totals across the processes of ``mixer serve --workers N``.

Each worker process holds its own series. Worker 0 owns the configured scrape port; the others
listen on ephemeral ports of the same host, whatever the handler's ``listen`` says.
Workers find each other through a private directory named after their supervisor (its pid and
start time, so a reused pid never shares it): each writes ``worker-<index>.json`` with the URL of
its ``/metrics/worker`` endpoint, which serves its series as JSON. On each scrape worker 0
fetches every other worker's series and serves the sum (see :class:`WorkerAggregator`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from adapters.prometheus._series import GAUGE, SUM, FamilySnapshot

#: The supervisor's worker index variable (``mixer.server.WORKER_INDEX_ENV``; not imported, so
#: that the adapter does not load the server package).
WORKER_INDEX_ENV: Final = "MIXER_WORKER_INDEX"
#: Where a worker serves its series for the aggregating worker.
PEER_PATH: Final = "/metrics/worker"
#: Bound on fetching one worker's series during a scrape.
PEER_TIMEOUT: Final = 2.0
#: The aggregating worker writes this when it starts; finding it tells a restarted one so.
AGGREGATOR_FILE: Final = "aggregator.json"

_DIR_PREFIX = "mixer-prometheus-"
_PEER_FILE = re.compile(r"worker-(\d+)\.json")

SeriesKey = tuple[str, tuple[str, ...]]


# -- snapshots on the wire ------------------------------------------------------------------------


@dataclass(slots=True)
class WorkerSnapshot:
    """One handler's series as one worker serves them to the aggregating worker.

    ``token`` is new for every handler object (a restart or a reload makes a new one);
    ``started`` is when it was made, on the system's monotonic clock (shared by the processes of
    one host).
    """

    token: str
    started: float
    families: list[FamilySnapshot]

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "token": self.token,
                "started": self.started,
                "families": [
                    {
                        "name": f.name,
                        "kind": f.kind,
                        "help": f.help,
                        "label_names": list(f.label_names),
                        "bounds": list(f.bounds),
                        "gauge_merge": f.gauge_merge,
                        "series": [[list(labels), list(values)] for labels, values in f.series.items()],
                    }
                    for f in self.families
                ],
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, body: bytes) -> WorkerSnapshot:
        """:raises ValueError: not a snapshot."""
        try:
            data = json.loads(body)
            families = [
                FamilySnapshot(
                    str(f["name"]),
                    str(f["kind"]),
                    str(f["help"]),
                    tuple(str(n) for n in f["label_names"]),
                    {
                        tuple(str(v) for v in labels): tuple(float(x) for x in values)
                        for labels, values in f["series"]
                    },
                    tuple(float(b) for b in f["bounds"]),
                    str(f["gauge_merge"]),
                )
                for f in data["families"]
            ]
            return cls(str(data["token"]), float(data["started"]), families)
        except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"not a worker snapshot: {exc!r}") from None


# -- aggregation ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Peer:
    token: str
    #: What the worker had when first seen, for workers older than the aggregator (see below).
    offsets: dict[SeriesKey, tuple[float, ...]]
    last: dict[SeriesKey, tuple[float, ...]] = field(default_factory=dict)
    last_gauges: dict[SeriesKey, tuple[float, ...]] = field(default_factory=dict)


@dataclass(slots=True)
class AggregatorStats:
    #: Fetches of another worker's series that failed (its last series were used instead).
    fetch_errors: int = 0
    #: Families a worker served that do not match this worker's config (during a reload).
    mismatched_families: int = 0
    #: Series of departed workers not kept: ``max_series`` reached.
    carried_dropped: int = 0


class WorkerAggregator:
    """Sums series across workers so that counters stay counters.

    Each worker's counters and histograms only grow while its handler lives; the sum must too,
    or Prometheus would read a partial drop as a reset and count everything again. So:

    - a worker whose handler is replaced (restart or reload: a new ``token``) has the last
      series seen from it carried into a *carried* total, and its successor counts from zero on
      top of it: the sum never goes down (what the departed worker counted after the last scrape
      is lost);
    - a worker that cannot be reached keeps contributing its last series;
    - when this aggregating handler is itself new while others have been counting for a while
      (``offset_older_workers``: worker 0 restarted, or its handler reloaded), what the older
      workers had when first seen is subtracted: the sum restarts from zero, a clean counter
      reset that ``rate()`` handles exactly, rather than a partial drop;
    - gauges: the most recently set value among the live workers (the series' ``updated``),
      or their sum for gauges marked so (``mixer_prometheus_series``);
    - a series that shrinks within one worker (it expired and came back) is taken as it is.

    Carried series are bounded by ``max_series`` (further ones are dropped and counted) and, with
    an expiry, removed once older than it. Call :meth:`merge` from one thread at a time.
    """

    def __init__(self, *, started: float, offset_older_workers: bool, max_series: int) -> None:
        self.started = started
        self.offset_older_workers = offset_older_workers
        self.max_series = max_series
        self.stats = AggregatorStats()
        self._peers: dict[int, _Peer] = {}
        self._carried: dict[SeriesKey, tuple[float, ...]] = {}
        self._carried_at: dict[SeriesKey, float] = {}

    def merge(
        self,
        own: list[FamilySnapshot],
        peers: Mapping[int, WorkerSnapshot | None],
        *,
        now: float,
        expire_before: float | None = None,
    ) -> list[FamilySnapshot]:
        """The families of ``own`` (this worker's config decides which exist) summed with
        ``peers`` (worker index to its snapshot, or None when it could not be fetched)."""
        identities = {f.name: f.identity for f in own}
        kinds = {f.name: f.kind for f in own}
        if expire_before is not None:
            self._expire(expire_before)
        merged = {f.name: dict(f.series) for f in own}
        summing = {f.name for f in own if f.kind == GAUGE and f.gauge_merge == SUM}
        for index, snapshot in sorted(peers.items()):
            totals, gauges = self._peer(index, snapshot, identities, kinds, now)
            _accumulate(merged, totals)
            for (name, labels), values in gauges.items():
                series = merged[name]
                held = series.get(labels)
                if held is None:
                    series[labels] = values
                elif name in summing:
                    series[labels] = (held[0] + values[0], max(held[1], values[1]))
                elif values[1] > held[1]:
                    series[labels] = values
        for index in list(self._peers):
            if index not in peers:
                # A worker no longer listed (its file went with a graceful stop): what it counted stays.
                self._depart(index, now)
        _accumulate(merged, self._carried)
        return [
            FamilySnapshot(f.name, f.kind, f.help, f.label_names, merged[f.name], f.bounds, f.gauge_merge)
            for f in own
        ]

    def _peer(
        self,
        index: int,
        snapshot: WorkerSnapshot | None,
        identities: Mapping[str, tuple[Any, ...]],
        kinds: Mapping[str, str],
        now: float,
    ) -> tuple[dict[SeriesKey, tuple[float, ...]], dict[SeriesKey, tuple[float, ...]]]:
        """This worker's counters and histograms (net of offsets) and its gauges."""
        state = self._peers.get(index)
        if snapshot is None:
            self.stats.fetch_errors += 1
            if state is None:
                return {}, {}
            return _net(state.last, state.offsets), {}
        if state is not None and state.token != snapshot.token:
            self._depart(index, now)
            state = None
        totals: dict[SeriesKey, tuple[float, ...]] = {}
        gauges: dict[SeriesKey, tuple[float, ...]] = {}
        for family in snapshot.families:
            if identities.get(family.name) != family.identity:
                self.stats.mismatched_families += 1
                continue
            target = gauges if kinds[family.name] == GAUGE else totals
            for labels, values in family.series.items():
                target[(family.name, labels)] = values
        if state is None:
            older = self.offset_older_workers and snapshot.started < self.started
            state = _Peer(snapshot.token, dict(totals) if older else {})
            self._peers[index] = state
        offsets = state.offsets
        for key in list(offsets):
            now_values = totals.get(key)
            # Gone (expired), or smaller than when first seen (expired and back): no offset.
            if now_values is None or _total(now_values) < _total(offsets[key]):
                del offsets[key]
        state.last = totals
        return _net(totals, offsets), gauges

    def _depart(self, index: int, now: float) -> None:
        state = self._peers.pop(index, None)
        if state is None:
            return
        for key, values in _net(state.last, state.offsets).items():
            held = self._carried.get(key)
            if held is None and len(self._carried) >= self.max_series:
                self.stats.carried_dropped += 1
                continue
            self._carried[key] = _add(held, values)
            self._carried_at[key] = now

    def _expire(self, before: float) -> None:
        stale = [key for key, at in self._carried_at.items() if at < before]
        for key in stale:
            del self._carried[key]
            del self._carried_at[key]


def _accumulate(
    merged: dict[str, dict[tuple[str, ...], tuple[float, ...]]], values: Mapping[SeriesKey, tuple[float, ...]]
) -> None:
    for (name, labels), counted in values.items():
        series = merged.get(name)
        if series is not None:
            series[labels] = _add(series.get(labels), counted)


def _total(values: tuple[float, ...]) -> float:
    # A counter's value; a histogram's observation count (its buckets without the trailing sum).
    return values[0] if len(values) == 1 else sum(values[:-1])


def _add(held: tuple[float, ...] | None, values: tuple[float, ...]) -> tuple[float, ...]:
    if held is None:
        return values
    if len(held) != len(values):
        return held
    return tuple(a + b for a, b in zip(held, values, strict=True))


def _net(
    values: Mapping[SeriesKey, tuple[float, ...]], offsets: Mapping[SeriesKey, tuple[float, ...]]
) -> dict[SeriesKey, tuple[float, ...]]:
    if not offsets:
        return dict(values)
    net: dict[SeriesKey, tuple[float, ...]] = {}
    for key, current in values.items():
        offset = offsets.get(key)
        net[key] = current if offset is None else tuple(a - b for a, b in zip(current, offset, strict=True))
    return net


# -- finding each other ---------------------------------------------------------------------------


def worker_index(environ: Mapping[str, str] | None = None) -> int | None:
    """This process's worker index under ``mixer serve --workers``, or None when not a worker."""
    value = (os.environ if environ is None else environ).get(WORKER_INDEX_ENV, "")
    return int(value) if value.isdigit() else None


def _process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux); "" where /proc is absent."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    fields = text[text.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else ""


def _supervisor_dir_name(pid: int) -> str:
    return f"{_DIR_PREFIX}{os.getuid()}-{pid}-{_process_start(pid)}"


def _private_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700) or accept it only if it is this user's and private.

    :raises PermissionError: it exists but another user could write to it.
    """
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(f"{path} is not a private directory of this user")
    return path


@dataclass(slots=True)
class PeerInfo:
    index: int
    pid: int
    url: str


class WorkerDirectory:
    """The directory the workers of one supervisor share for one handler."""

    def __init__(self, handler_name: str, index: int, *, supervisor: int | None = None) -> None:
        parent = os.getppid() if supervisor is None else supervisor
        base = Path(tempfile.gettempdir()) / _supervisor_dir_name(parent)
        self.base = base
        self.path = base / quote(handler_name, safe="")
        self.index = index
        self.token = uuid.uuid4().hex
        self.started = time.monotonic()

    def open(self) -> None:
        """:raises OSError: the directory cannot be made private to this user."""
        _private_dir(self.base)
        _private_dir(self.path)

    def publish(self, url: str) -> None:
        """Tell the aggregating worker where this worker's series are."""
        _write_json(
            self.path / f"worker-{self.index}.json", {"pid": os.getpid(), "token": self.token, "url": url}
        )

    def claim_aggregation(self) -> bool:
        """Mark this handler as the aggregator; whether one had been before (a restart or reload)."""
        marker = self.path / AGGREGATOR_FILE
        before = marker.exists()
        _write_json(marker, {"pid": os.getpid(), "token": self.token})
        return before

    def peers(self) -> list[PeerInfo]:
        """The other workers that published an endpoint and whose process is alive."""
        found: list[PeerInfo] = []
        try:
            names = os.listdir(self.path)
        except OSError:
            return found
        for name in names:
            match = _PEER_FILE.fullmatch(name)
            if match is None or int(match.group(1)) == self.index:
                continue
            try:
                data = json.loads((self.path / name).read_text("utf-8"))
                peer = PeerInfo(int(match.group(1)), int(data["pid"]), str(data["url"]))
            except (OSError, ValueError, KeyError, TypeError):
                continue
            found.append(peer)
        return sorted(found, key=lambda p: p.index)

    def withdraw(self) -> None:
        """Remove this worker's file unless a successor already replaced it."""
        path = self.path / f"worker-{self.index}.json"
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            if json.loads(path.read_text("utf-8"))["token"] == self.token:
                path.unlink()

    def remove_stale(self, log: logging.Logger) -> None:
        """Remove the directories of this user's supervisors that are gone (never this one's)."""
        mine = f"{_DIR_PREFIX}{os.getuid()}-"
        for entry in Path(tempfile.gettempdir()).glob(f"{mine}*"):
            pid_text = entry.name[len(mine) :].partition("-")[0]
            if entry == self.base or not pid_text.isdigit():
                continue
            pid = int(pid_text)
            if alive(pid) and _supervisor_dir_name(pid) == entry.name:
                continue
            try:
                if os.lstat(entry).st_uid == os.getuid():
                    shutil.rmtree(entry)
            except OSError as exc:
                log.debug("could not remove %s: %s", entry, exc)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dict(data)), "utf-8")
    os.replace(tmp, path)
