"""Prometheus metrics of one server, in a registry of its own (no module-level global state).

* ``rewardflow_requests_total{route, code}``: every answered request, probes included;
* ``rewardflow_request_seconds{route}``: request latency histogram;
* ``rewardflow_samples_total{reward, status}``: per component, plus ``reward="total"`` for the combined result;
* ``rewardflow_reward_seconds{reward}``: reward-call latency histogram (queueing excluded) per component for a
  single-component spec; for several components the combined sample latency under ``reward="total"``;
* ``rewardflow_queue_depth``: samples accepted and not yet answered (what back-pressure compares to max_queue);
* ``rewardflow_in_flight_requests``; ``rewardflow_batch_samples{reward}``: sizes of merged model calls;
* ``rewardflow_merged_samples``: sizes of the engine calls merged from concurrent requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rewardflow.types import RewardResult

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """The collectors of one app; :meth:`render` is the ``/metrics`` body."""

    def __init__(self, components: Sequence[str]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("rewardflow_requests", "Requests answered", ["route", "code"], registry=r)
        self.request_seconds = Histogram(
            "rewardflow_request_seconds", "Request latency", ["route"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.samples = Counter("rewardflow_samples", "Samples scored", ["reward", "status"], registry=r)
        self.reward_seconds = Histogram(
            "rewardflow_reward_seconds", "Reward latency per sample", ["reward"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("rewardflow_queue_depth", "Samples accepted, not yet answered", registry=r)
        self.in_flight = Gauge("rewardflow_in_flight_requests", "Requests being handled", registry=r)
        self.batch_samples = Histogram(
            "rewardflow_batch_samples", "Samples per merged model call", ["reward"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.merged_samples = Histogram(
            "rewardflow_merged_samples",
            "Samples per engine call merged from concurrent requests",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self._components = tuple(components)
        self._latency_label = self._components[0] if len(self._components) == 1 else "total"
        # Pre-create the label sets so every series exists (at 0) from the start.
        self._samples: dict[tuple[str, str], Any] = {}
        for name in (*self._components, "total"):
            for status in ("ok", "error", "timeout"):
                self._samples[(name, status)] = self.samples.labels(name, status)
        self._reward_seconds = self.reward_seconds.labels(self._latency_label)
        self._requests: dict[tuple[str, int], Any] = {}
        self._request_seconds: dict[str, Any] = {}

    def answered(self, route: str, code: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        # The labelled children are looked up once and kept: labels() takes a lock and builds a tuple per call,
        # a visible share of a one-sample request's cost.
        key = (route, code)
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = self.requests.labels(route, str(code))
        counter.inc()
        histogram = self._request_seconds.get(route)
        if histogram is None:
            histogram = self._request_seconds[route] = self.request_seconds.labels(route)
        histogram.observe(seconds)

    def observe_results(self, results: Sequence[RewardResult]) -> None:
        # Counted per request first, then one increment per label set.
        counts: dict[tuple[str, str], int] = {}
        observe = self._reward_seconds.observe
        components = self._components
        for r in results:
            status = r.status.value
            key = ("total", status)
            counts[key] = counts.get(key, 0) + 1
            values = r.components
            for name in components:
                key = (name, "ok" if values.get(name) is not None else (status if status != "ok" else "error"))
                counts[key] = counts.get(key, 0) + 1
            if r.latency > 0:
                observe(r.latency)
        for key, n in counts.items():
            counter = self._samples.get(key)
            if counter is None:
                counter = self._samples[key] = self.samples.labels(*key)
            counter.inc(n)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
