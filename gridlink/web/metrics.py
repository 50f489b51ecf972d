"""Prometheus metrics: what each process counts, and the ``/metrics`` exposition.

Counters and histograms are made per app (``Metrics``) on a registry of their
own, so in-process apps (tests, ``falcon.testing``) never share counts. Under
gunicorn, ``infra/gunicorn.conf.py`` points ``PROMETHEUS_MULTIPROC_DIR`` at a
fresh directory before the workers fork: every worker then writes its values
to files there, and a scrape answered by any worker adds up all of them.

A request's counts are only queued by its thread (``Batches``) and added up
by a thread of the process every ``COUNT_SECONDS``, and before each scrape
that process answers: a scrape may miss another worker's last fraction of a
second, and a worker killed outright loses it.

The replica and primary gauges are not stored at all: they are read at
scrape time from the scraping worker's own replica router, whose view is at
most a probe interval old. Every worker probes the same servers, so one
worker's view is the cluster's; no gauge outlives a dead worker.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from gridlink.cache.stream import StreamReport
from gridlink.routing.router import ReplicaRouter, RouterSnapshot
from gridlink.web.batches import Batches

MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNMATCHED_ROUTE = "unmatched"

# From a cached profile (about a millisecond) to the 5 s statement timeout.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# How often a process adds up what its requests queued.
COUNT_SECONDS = 0.1

# What a request queues, one item each: an answer is (its (route, method,
# status), the seconds it took, where its body came from or None); a profile
# lookup is its result.
_RequestKey = tuple[str, str, int]
_Answer = tuple[_RequestKey, float, str | None]
_Observation = _Answer | str


class Metrics:
    """The counters and histograms one app records into."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gridlink_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gridlink_http_request_duration_seconds",
            "Time from the request reaching the app to the answer being ready.",
            ["route", "method", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.profile_cache = Counter(
            "gridlink_profile_cache_lookups",
            "Profile lookups, by result: memory (this process's near cache), hit (Redis) or miss.",
            ["result"],
            registry=self.registry,
        )
        self.reads = Counter(
            "gridlink_reads",
            "Reads answered, by where the body came from: cache, replica or primary.",
            ["source"],
            registry=self.registry,
        )
        # Every series exists from the start, so a rate() has a zero to start
        # from; and each child is bound once, not looked up per request.
        self._lookups = {
            result: self.profile_cache.labels(result=result) for result in ("memory", "hit", "miss")
        }
        self._reads = {
            source: self.reads.labels(source=source) for source in ("cache", "replica", "primary")
        }
        # (route, method, status) -> its counter and histogram children. Routes
        # are templates and methods a known set, so this stays small.
        self._request_series: dict[_RequestKey, tuple[Any, Any]] = {}
        self._queued: Batches[_Observation] = Batches(
            self._count, interval=COUNT_SECONDS, name="metrics"
        )

    def observe_request(
        self,
        *,
        route: str,
        method: str,
        status: int,
        duration_seconds: float,
        read_source: str | None = None,
    ) -> None:
        """Count an answer, and the read it served from ``read_source`` (None: no read)."""
        self._queued.put(((route, method, status), duration_seconds, read_source))

    def observe_profile_lookup(self, result: str) -> None:
        """Count a profile lookup: ``memory``, ``hit`` or ``miss``."""
        self._queued.put(result)

    def count_queued(self) -> None:
        """Add up everything queued so far (before a scrape)."""
        self._queued.drain()

    def close(self) -> None:
        self._queued.close()

    def _count(self, observations: list[_Observation]) -> None:
        """Add up a batch: one increment per series and bucket, however many answers."""
        durations: dict[_RequestKey, list[float]] = {}
        reads: Tally[str] = Tally()
        lookups: Tally[str] = Tally()
        for observation in observations:
            if isinstance(observation, str):
                lookups[observation] += 1
                continue
            key, seconds, source = observation
            durations.setdefault(key, []).append(seconds)
            if source is not None:
                reads[source] += 1
        for request_key, taken in durations.items():
            requests, latency = self._series(request_key)
            requests.inc(len(taken))
            observe_all(latency, taken)
        for source, count in reads.items():
            (self._reads.get(source) or self.reads.labels(source=source)).inc(count)
        for result, count in lookups.items():
            self._lookups[result].inc(count)

    def _series(self, key: _RequestKey) -> tuple[Any, Any]:
        series = self._request_series.get(key)
        if series is None:
            route, method, status = key
            labels = {"route": route, "method": method, "status": str(status)}
            series = self.requests.labels(**labels), self.latency.labels(**labels)
            self._request_series[key] = series
        return series


def observe_all(histogram: Any, amounts: list[float]) -> None:
    """Observe every one of ``amounts`` in a labelled ``Histogram``, as ``observe`` would.

    ``observe`` takes the value's lock (and, under gunicorn, writes its file)
    twice an amount; this once a bucket. It uses prometheus_client's private
    ``_upper_bounds``, ``_buckets`` and ``_sum`` (constraints.txt pins the
    version; tests/unit/test_metrics_counting.py compares the two ways).
    """
    counts = Tally(bisect_left(histogram._upper_bounds, amount) for amount in amounts)
    histogram._sum.inc(sum(amounts))
    for bucket, count in counts.items():
        histogram._buckets[bucket].inc(count)


def current_snapshot(router: ReplicaRouter) -> RouterSnapshot:
    """Return the router's view, probing once now if this process has not probed yet.

    A worker that never served a read has no view: reporting every server
    unreachable then would be a false alarm.
    """
    snapshot = router.snapshot()
    return router.refresh() if snapshot.checked_at is None else snapshot


class RouterCollector:
    """Expose the replica router's current view as gauges."""

    def __init__(self, router: ReplicaRouter) -> None:
        self._router = router

    def collect(self) -> Iterable[GaugeMetricFamily]:
        return _router_gauges(current_snapshot(self._router))


def _router_gauges(snapshot: RouterSnapshot) -> Iterator[GaugeMetricFamily]:
    primary = GaugeMetricFamily(
        "gridlink_primary_reachable", "1 if the primary answered the last probe.", labels=["host"]
    )
    primary.add_metric([snapshot.primary_host], float(snapshot.primary_reachable))
    yield primary
    labels = ["replica", "host"]
    reachable = GaugeMetricFamily(
        "gridlink_replica_reachable", "1 if the replica answered the last probe.", labels=labels
    )
    in_rotation = GaugeMetricFamily(
        "gridlink_replica_in_rotation", "1 if the replica serves reads.", labels=labels
    )
    lag_bytes = GaugeMetricFamily(
        "gridlink_replica_lag_bytes",
        "WAL bytes the replica has yet to replay (absent when unknown).",
        labels=labels,
    )
    lag_seconds = GaugeMetricFamily(
        "gridlink_replica_lag_seconds",
        "Seconds the replica's data is behind the primary (absent when unknown).",
        labels=labels,
    )
    for replica in snapshot.replicas:
        names = [replica.name, replica.host]
        reachable.add_metric(names, float(replica.reachable))
        in_rotation.add_metric(names, float(replica.in_rotation))
        if replica.lag_bytes is not None:
            lag_bytes.add_metric(names, float(replica.lag_bytes))
        if replica.lag_seconds is not None:
            lag_seconds.add_metric(names, replica.lag_seconds)
    in_rotation_count = GaugeMetricFamily(
        "gridlink_replicas_in_rotation", "How many replicas serve reads."
    )
    in_rotation_count.add_metric([], float(len(snapshot.in_rotation)))
    yield from (reachable, in_rotation, in_rotation_count, lag_bytes, lag_seconds)


class StreamCollector:
    """Expose the change stream's lag as gauges, measured at scrape time."""

    def __init__(self, report: Callable[[], StreamReport]) -> None:
        self._report = report

    def collect(self) -> Iterator[GaugeMetricFamily]:
        report = self._report()
        up = GaugeMetricFamily(
            "gridlink_stream_up",
            "1 if the change stream's applied position is in Redis (fills from replicas can stay).",
        )
        up.add_metric([], float(report.status == "ok"))
        yield up
        lag_bytes = GaugeMetricFamily(
            "gridlink_stream_lag_bytes",
            "The primary's WAL position minus the stream's applied one (absent when unknown).",
        )
        if report.lag_bytes is not None:
            lag_bytes.add_metric([], float(report.lag_bytes))
        yield lag_bytes
        lag_seconds = GaugeMetricFamily(
            "gridlink_stream_lag_seconds",
            "Age of the oldest profile change not yet in Redis; 0 when none (absent when unknown).",
        )
        if report.lag_seconds is not None:
            lag_seconds.add_metric([], report.lag_seconds)
        yield lag_seconds


class _Exposition:
    """Chain the collectors of one scrape."""

    def __init__(self, *collectors: Collector) -> None:
        self._collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for collector in self._collectors:
            yield from collector.collect()


def render(metrics: Metrics, router: ReplicaRouter, stream: Callable[[], StreamReport]) -> bytes:
    """Return the Prometheus text of this app, or of every worker when under gunicorn."""
    metrics.count_queued()
    multiprocess_dir = os.environ.get(MULTIPROCESS_DIR_VARIABLE)
    counted: Collector
    if multiprocess_dir:
        # The files of every worker, live or dead: counts survive a worker restart.
        counted = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(counted, path=multiprocess_dir)  # type: ignore[no-untyped-call]
    else:
        counted = metrics.registry
    return generate_latest(_Exposition(counted, RouterCollector(router), StreamCollector(stream)))


class InternalListener:
    """Answer requests that came in on the internal listener with ``/metrics`` alone, no token.

    The scraper's own way in (``GRIDLINK_METRICS_BIND``): a second socket of
    the same server, bound where only the monitoring network reaches. Which
    socket a request came in on is the server's to say (``SERVER_NAME`` and
    ``SERVER_PORT`` are the listener's address under gunicorn), never the
    client's. Every other request goes to ``app``, whose ``/metrics`` still
    wants an admin's token.
    """

    def __init__(self, app: Any, listener: str, scrape: Callable[[], bytes]) -> None:
        self._app = app
        self._listener = listener
        self._scrape = scrape

    def __call__(self, env: dict[str, Any], start_response: Any) -> Any:
        if f"{env.get('SERVER_NAME')}:{env.get('SERVER_PORT')}" != self._listener:
            return self._app(env, start_response)
        path = env.get("PATH_INFO")
        if env.get("REQUEST_METHOD") != "GET" or path not in ("/metrics", "/metrics/"):
            start_response("404 Not Found", [("Content-Length", "0")])
            return [b""]
        body = self._scrape()
        headers = [("Content-Type", CONTENT_TYPE), ("Content-Length", str(len(body)))]
        start_response("200 OK", headers)
        return [body]
