"""The prometheus handler: records metric instances in its own registry and serves ``/metrics``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Final

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric

from adapters.prometheus._config import MetricKind, PrometheusConfig
from adapters.prometheus._series import (
    DimensionKeys,
    FamilySnapshot,
    HandlerStats,
    MetricSeries,
    SeriesBudget,
    SeriesCollector,
    encode_text,
    render,
)
from adapters.prometheus._sharing import WorkerSharing
from adapters.prometheus._workers import (
    PEER_PATH,
    WorkerAggregator,
    WorkerDirectory,
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
        self._sharing = WorkerSharing(env.handler_name, config, env.logger, self._collector)
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
    def workers(self) -> WorkerDirectory | None:
        """With ``mixer serve --workers``: the directory the workers share (see _workers.py)."""
        return self._sharing.workers

    @property
    def aggregator(self) -> WorkerAggregator | None:
        """On worker 0: what sums the other workers' series into each scrape."""
        return self._sharing.aggregator

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
                await self._sharing.join(index, self._port)
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
        await self._sharing.close()
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
            app.router.add_get(PEER_PATH, self._sharing.serve_snapshot)
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
        if self._sharing.aggregator is not None:
            body = await self._sharing.render(encoder)
        else:
            # Rendering many series takes long enough to stall Reports; a thread keeps the loop free.
            body = await asyncio.to_thread(lambda: encoder(self._collector.snapshot()))
        response = web.Response(body=body, headers={"Content-Type": content_type})
        response.enable_compression()
        return response


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
