"""The prometheus handler: records metric instances in its own registry and serves ``/metrics``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Final

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric

from adapters.prometheus._config import SELF_METRIC_PREFIX, MetricKind, PrometheusConfig
from adapters.prometheus._series import (
    COUNTER,
    GAUGE,
    DimensionKeys,
    FamilySnapshot,
    HandlerStats,
    MetricSeries,
    SeriesBudget,
    SeriesCollector,
    encode_text,
    render,
)
from adapters.prometheus._workers import (
    PEER_PATH,
    PEER_TIMEOUT,
    PeerInfo,
    WorkerAggregator,
    WorkerDirectory,
    WorkerSnapshot,
    alive,
    worker_index,
)
from mixer.adapter import HandlerEnv, ReportBatch, ReportHandler
from mixer.templates import MetricInstance

#: Middle parts of legacy instance names: ``requestcount.metric.istio-system`` (Istio 1.0 kinds) and
#: ``requestcount.instance.istio-system`` (the form Istio 1.1-1.4 charts wrote in instance_name).
_KIND_INFIXES = frozenset({"metric", "instance"})
#: Instance names are few (they come from config), but the resolution cache still gets a bound.
_MAX_ROUTES = 10_000
#: The text format version Mixer's Go client served (encode_text writes it).
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


#: The variable the embedded default and the stock configs take the scrape address from.
LISTEN_ENV: Final = "MIXER_PROMETHEUS_LISTEN"


class ListenError(OSError):
    """The scrape endpoint could not be bound (most often: another handler already listens there)."""

    def __str__(self) -> str:
        # The message names the errno's meaning already; "[Errno 98]" in front only adds noise.
        return str(self.strerror)


def instance_keys(name: str) -> tuple[str, str]:
    """``(qualified, bare)`` forms of an instance name; ``qualified`` is ``""`` for a bare name.

    ``requestcount.istio-system`` and ``requestcount.metric.istio-system`` both give
    ``("requestcount.istio-system", "requestcount")``; ``requestcount`` gives ``("", "requestcount")``.
    """
    parts = name.split(".")
    if len(parts) == 3 and parts[1] in _KIND_INFIXES:
        return f"{parts[0]}.{parts[2]}", parts[0]
    if len(parts) == 1:
        return "", name
    return name, name.rpartition(".")[0]


class PrometheusHandler(ReportHandler):
    """Records metric instances as Prometheus series; a pull exporter, so reports apply in place.

    ``handle_report`` updates in-process series directly (a dict lookup and a float add per
    metric): nothing waits on a backend, so there is no delivery queue and it never raises
    :class:`~mixer.adapter.HandlerOverloaded`. Updates and expiry run on the event loop; the
    exposition is rendered in a worker thread from a snapshot of the series.
    """

    def __init__(
        self,
        config: PrometheusConfig,
        env: HandlerEnv,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.stats = HandlerStats()
        self._name = env.handler_name
        self._log = env.logger
        self._clock = clock
        self._budget = SeriesBudget(config.max_series)
        # One key builder per distinct label-name tuple, shared by the metrics that have it.
        keys: dict[tuple[str, ...], DimensionKeys] = {}
        self._metrics = tuple(
            MetricSeries(
                m,
                self._budget,
                self.stats,
                env.logger,
                keys.setdefault(tuple(m.label_names), DimensionKeys(tuple(m.label_names))),
            )
            for m in config.metrics
        )
        self._keys = tuple(keys.values())
        # OpenMetrics would rename a counter without the _total suffix (Prometheus would then store
        # `istio_double_request_count_total`, which Mixer's users never queried): such a handler
        # answers in the text format only, as Mixer's did.
        self._openmetrics = all(
            m.kind is not MetricKind.COUNTER or m.full_name.endswith("_total") for m in config.metrics
        )
        self._qualified: dict[str, list[MetricSeries]] = {}
        self._bare: dict[str, list[MetricSeries]] = {}
        for metric in self._metrics:
            qualified, bare = instance_keys(metric.info.instance_name)
            if qualified:
                self._qualified.setdefault(qualified, []).append(metric)
            else:
                self._bare.setdefault(bare, []).append(metric)
        self._routes: dict[str, tuple[MetricSeries, ...]] = {}
        #: The handler's own registry (never the process-global one): its metrics plus ``mixer_prometheus_*``.
        self.registry = CollectorRegistry(auto_describe=False)
        self._collector = SeriesCollector(self._metrics, self._budget, self.stats, env.handler_name)
        self.registry.register(self._collector)
        #: With ``mixer serve --workers``: the directory the workers share, and on worker 0 the
        #: aggregator that sums the others' series into each scrape (see _workers.py).
        self.workers: WorkerDirectory | None = None
        self.aggregator: WorkerAggregator | None = None
        self._peer_session: aiohttp.ClientSession | None = None
        self._merge_lock = threading.Lock()
        self._unreachable: set[int] = set()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._expiry_task: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False

    @property
    def port(self) -> int | None:
        """The port ``/metrics`` is served on once started (the chosen one for ``listen`` port 0)."""
        return self._port

    @property
    def series_count(self) -> int:
        """Label sets held across all metrics of the handler."""
        return self._budget.count

    async def start(self) -> None:
        """Bind the scrape endpoint and start the expiry task.

        :raises ListenError: ``listen`` is taken, e.g. by another prometheus handler: each handler
            needs its own address.
        """
        if self._closed:
            raise RuntimeError(f"prometheus handler {self._name!r} was shut down")
        if self._started:
            return
        self._started = True
        if self.config.enable_listener:
            await self._listen()
            index = worker_index()
            if index is not None:
                await self._join_workers(index)
        policy = self.config.metrics_expiration_policy
        if policy is not None:
            self._expiry_task = asyncio.create_task(
                self._expire_periodically(policy.check_interval.total_seconds()),
                name=f"prometheus expiry {self._name}",
            )

    async def shutdown(self, timeout: float) -> None:
        """Stop intake, the expiry task and the listener. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry_task
            self._expiry_task = None
        if self.workers is not None:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self.workers.withdraw)
        if self._peer_session is not None:
            session, self._peer_session = self._peer_session, None
            with contextlib.suppress(Exception):
                await session.close()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            try:
                await asyncio.wait_for(runner.cleanup(), timeout=max(timeout, 0.0))
            except TimeoutError:
                self._log.warning(
                    "prometheus handler %s: listener did not close within %.1fs", self._name, timeout
                )

    def handle_report(self, batch: ReportBatch) -> None:
        if self._closed:
            return
        now = self._clock()
        routes = self._routes
        for instance in batch.instances:
            targets = routes.get(instance.name)
            if targets is None:
                targets = self._resolve(instance.name)
            if not targets or not isinstance(instance, MetricInstance):
                self.stats.instances_unmatched += 1
                continue
            for metric in targets:
                metric.record(instance, now)
        for keys in self._keys:
            keys.forget()

    def expire_stale(self, now: float | None = None) -> int:
        """Remove label sets not updated within ``metrics_expiry_duration``; returns how many."""
        policy = self.config.metrics_expiration_policy
        if policy is None:
            return 0
        cutoff = (self._clock() if now is None else now) - policy.metrics_expiry_duration.total_seconds()
        removed = sum(metric.expire(cutoff) for metric in self._metrics)
        self.stats.series_expired += removed
        return removed

    def _resolve(self, name: str) -> tuple[MetricSeries, ...]:
        qualified, bare = instance_keys(name)
        # Every metric naming the instance gets it: qualified names first, then bare ones.
        targets = tuple(self._qualified.get(qualified, ())) + tuple(self._bare.get(bare, ()))
        if len(self._routes) < _MAX_ROUTES:
            self._routes[name] = targets
            if not targets:
                self._log.warning(
                    "prometheus handler %s: no metric has instance_name %r; its instances are dropped",
                    self._name,
                    name,
                )
        return targets

    async def _expire_periodically(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            removed = self.expire_stale()
            if removed:
                self._log.debug("prometheus handler %s: expired %d label sets", self._name, removed)

    async def _listen(self) -> None:
        host, port = self.config.host, self.config.port
        index = worker_index()
        if index:
            # Worker 0 owns the configured port and serves every worker's sum; the others listen
            # where the system puts them, whatever the config says (not only when it reads the
            # listen address from MIXER_PROMETHEUS_LISTEN, which the supervisor moves for them).
            port = 0
        app = web.Application()
        app.router.add_get("/metrics", self._serve_metrics)
        if index is not None:
            app.router.add_get(PEER_PATH, self._serve_worker_snapshot)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            await runner.cleanup()
            raise ListenError(
                exc.errno,
                f"prometheus handler {self._name!r} cannot listen on {self.config.listen!r}: "
                f"{os.strerror(exc.errno) if exc.errno else exc} (another process or prometheus handler "
                f"has it: set the handler's listen param; the embedded default and deploy/config "
                f"read it from {LISTEN_ENV}, e.g. {LISTEN_ENV}=127.0.0.1:0)",
            ) from exc
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        self._log.info("prometheus handler %s: /metrics on %s:%d", self._name, host, self._port)

    def exposition(self) -> bytes:
        """This process's series in the text format, as ``/metrics`` serves them without workers."""
        return encode_text(self._collector.snapshot())

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = _encoder_for(request.headers.get("Accept", ""), self._openmetrics)
        if self.aggregator is not None:
            peers = await self._fetch_peers()
            body = await asyncio.to_thread(self._render_aggregate, encoder, peers)
        else:
            # Rendering many series takes long enough to stall Reports; a thread keeps the loop free.
            body = await asyncio.to_thread(lambda: encoder(self._collector.snapshot()))
        response = web.Response(body=body, headers={"Content-Type": content_type})
        response.enable_compression()
        return response

    # -- workers --------------------------------------------------------------------------------

    async def _join_workers(self, index: int) -> None:
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

    def worker_snapshot(self) -> WorkerSnapshot:
        """This handler's series as the aggregating worker fetches them."""
        assert self.workers is not None
        return WorkerSnapshot(self.workers.token, self.workers.started, self._collector.snapshot())

    async def _serve_worker_snapshot(self, request: web.Request) -> web.Response:
        if self.workers is None:
            raise web.HTTPNotFound()
        body = await asyncio.to_thread(lambda: self.worker_snapshot().to_json())
        return web.Response(body=body, content_type="application/json")

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


class _Families:
    """A collector over families already merged."""

    def __init__(self, families: list[FamilySnapshot]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return render(self._families)


def _encoder_for(
    accept: str, allow_openmetrics: bool = True
) -> tuple[Callable[[list[FamilySnapshot]], bytes], str]:
    """The encoder of families the scraper asked for, and its content type.

    The text format is written by :func:`encode_text` (names as Mixer exposed them); OpenMetrics,
    which Mixer never spoke and which requires ``_total`` on counter samples, by prometheus_client,
    and only when ``allow_openmetrics``.
    """
    encoder, content_type = choose_encoder(accept)
    if not allow_openmetrics or not content_type.startswith("application/openmetrics-text"):
        return encode_text, TEXT_CONTENT_TYPE

    def openmetrics(families: list[FamilySnapshot]) -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(families))
        return encoder(registry)

    return openmetrics, content_type
