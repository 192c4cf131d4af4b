"""A prometheus handler's part in a ``mixer serve --workers`` group: worker 0 serves the sum of
every worker's series on the configured port; the others publish theirs for it to fetch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable

import aiohttp
from aiohttp import web

from adapters.prometheus._config import SELF_METRIC_PREFIX, PrometheusConfig
from adapters.prometheus._series import COUNTER, GAUGE, FamilySnapshot, SeriesCollector
from adapters.prometheus._workers import (
    PEER_PATH,
    PEER_TIMEOUT,
    PeerInfo,
    WorkerAggregator,
    WorkerDirectory,
    WorkerSnapshot,
    alive,
)


class WorkerSharing:
    """The directory the workers share, and on worker 0 the aggregator and the peer fetches."""

    def __init__(
        self, name: str, config: PrometheusConfig, log: logging.Logger, collector: SeriesCollector
    ) -> None:
        self.config = config
        self._name = name
        self._log = log
        self._collector = collector
        self._port: int | None = None
        self.workers: WorkerDirectory | None = None
        self.aggregator: WorkerAggregator | None = None
        self._peer_session: aiohttp.ClientSession | None = None
        self._merge_lock = threading.Lock()
        self._unreachable: set[int] = set()

    async def close(self) -> None:
        """Withdraw from the directory and close the peer connections. Idempotent."""
        if self.workers is not None:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self.workers.withdraw)
        if self._peer_session is not None:
            session, self._peer_session = self._peer_session, None
            with contextlib.suppress(Exception):
                await session.close()

    async def join(self, index: int, port: int | None) -> None:
        """Take part as worker ``index`` whose scrape endpoint is on ``port``."""
        self._port = port
        directory = WorkerDirectory(self._name, index)
        try:
            await asyncio.to_thread(directory.open)
            if index == 0:
                await asyncio.to_thread(directory.remove_stale, self._log)
                restarted = await asyncio.to_thread(directory.claim_aggregation)
            else:
                await asyncio.to_thread(directory.publish, self._peer_url())
        except OSError as exc:
            self._log.error(
                "prometheus handler %s: cannot share series with the other workers (%s); "
                "this port shows worker %d's share only",
                self._name,
                exc,
                index,
            )
            return
        self.workers = directory
        if index == 0:
            self.aggregator = WorkerAggregator(
                started=directory.started, offset_older_workers=restarted, max_series=self.config.max_series
            )
            self._log.info(
                "prometheus handler %s: scrapes of port %s sum every worker's series%s",
                self._name,
                self._port,
                " (counters restart from zero: this worker's handler is new)" if restarted else "",
            )

    def _peer_url(self) -> str:
        host = self.config.host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self._port}{PEER_PATH}"

    def snapshot(self) -> WorkerSnapshot:
        """This handler's series as the aggregating worker fetches them."""
        assert self.workers is not None
        return WorkerSnapshot(self.workers.token, self.workers.started, self._collector.snapshot())

    async def serve_snapshot(self, request: web.Request) -> web.Response:
        if self.workers is None:
            raise web.HTTPNotFound()
        body = await asyncio.to_thread(lambda: self.snapshot().to_json())
        return web.Response(body=body, content_type="application/json")

    async def render(self, encoder: Callable[[list[FamilySnapshot]], bytes]) -> bytes:
        """Every worker's series summed (the last ones of a worker that did not answer), encoded."""
        peers = await self._fetch_peers()
        return await asyncio.to_thread(self._render_aggregate, encoder, peers)

    async def _fetch_peers(self) -> dict[int, WorkerSnapshot | None]:
        assert self.workers is not None
        peers = await asyncio.to_thread(self.workers.peers)
        if not peers:
            return {}
        if self._peer_session is None:
            self._peer_session = aiohttp.ClientSession()
        answers = await asyncio.gather(*(self._fetch_peer(self._peer_session, peer) for peer in peers))
        return {peer.index: answer for peer, answer in zip(peers, answers, strict=True)}

    async def _fetch_peer(self, session: aiohttp.ClientSession, peer: PeerInfo) -> WorkerSnapshot | None:
        why = "its process is gone"
        if alive(peer.pid):
            try:
                timeout = aiohttp.ClientTimeout(total=PEER_TIMEOUT)
                async with session.get(peer.url, timeout=timeout) as response:
                    if response.status != 200:
                        raise ValueError(f"HTTP {response.status}")
                    body = await response.read()
                snapshot = await asyncio.to_thread(WorkerSnapshot.from_json, body)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                why = f"{type(exc).__name__}: {exc}"
            else:
                self._unreachable.discard(peer.index)
                return snapshot
        if peer.index not in self._unreachable:
            self._unreachable.add(peer.index)
            self._log.warning(
                "prometheus handler %s: worker %d's series not fetched (%s); its last ones are used",
                self._name,
                peer.index,
                why,
            )
        return None

    def _render_aggregate(
        self, encoder: Callable[[list[FamilySnapshot]], bytes], peers: dict[int, WorkerSnapshot | None]
    ) -> bytes:
        aggregator = self.aggregator
        assert aggregator is not None
        policy = self.config.metrics_expiration_policy
        now = time.monotonic()
        expire_before = None if policy is None else now - policy.metrics_expiry_duration.total_seconds()
        # Scrapes may overlap; the aggregator's state changes with each merge.
        with self._merge_lock:
            families = aggregator.merge(
                self._collector.snapshot(), peers, now=now, expire_before=expire_before
            )
            fetch_errors = aggregator.stats.fetch_errors
            carried_dropped = aggregator.stats.carried_dropped
        handler: tuple[str, ...] = (self._name,)
        reached = 1 + sum(snapshot is not None for snapshot in peers.values())
        families.append(
            FamilySnapshot(
                f"{SELF_METRIC_PREFIX}workers",
                GAUGE,
                "Worker processes whose series this scrape sums.",
                ("handler",),
                {handler: (float(reached), now)},
            )
        )
        families.append(
            FamilySnapshot(
                f"{SELF_METRIC_PREFIX}worker_fetch_errors_total",
                COUNTER,
                "Fetches of another worker's series that failed (its last series were used).",
                ("handler",),
                {handler: (float(fetch_errors),)},
            )
        )
        families.append(
            FamilySnapshot(
                f"{SELF_METRIC_PREFIX}carried_series_dropped_total",
                COUNTER,
                "Series of replaced workers not carried into the totals: max_series reached.",
                ("handler",),
                {handler: (float(carried_dropped),)},
            )
        )
        return encoder(families)
