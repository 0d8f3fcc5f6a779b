"""Prometheus metrics of one runner (its own registry, so several can live in one process)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """Counters, gauges and histograms the executor updates."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.limit = Gauge("imgrun_pool_limit", "Concurrency limit", ["pool"], registry=r)
        self.running = Gauge("imgrun_pool_running", "Subtasks in flight", ["pool"], registry=r)
        self.pending = Gauge("imgrun_pool_pending", "Claimable subtasks", ["pool"], registry=r)
        self.claims = Counter("imgrun_claims", "Subtasks claimed", ["pool"], registry=r)
        self.completions = Counter(
            "imgrun_completions", "Subtasks completed", ["pool", "provider"], registry=r
        )
        self.failures = Counter(
            "imgrun_failures",
            "Failed attempts by outcome (retry, defer, failed)",
            ["pool", "provider", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "imgrun_request_seconds",
            "Time from start to result of one attempt",
            ["pool", "provider"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # (pool, provider) -> its completion counter and latency histogram: labels() resolves
        # the children through a lock and a dict of tuples on every call, once per subtask.
        self._per_provider: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        self.scaling = Counter(
            "imgrun_scaling_events", "Changes of a pool's limit", ["pool", "direction"], registry=r
        )

    def completed(self, pool: str, provider: str, seconds: float) -> None:
        """Count one completion of `provider` in `pool` and observe its latency."""
        children = self._per_provider.get((pool, provider))
        if children is None:
            children = (
                self.completions.labels(pool, provider),
                self.latency.labels(pool, provider),
            )
            self._per_provider[(pool, provider)] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_pools(self, snapshot: dict[str, Any]) -> None:
        """Set the pool gauges from an executor snapshot."""
        for pool, state in snapshot.items():
            self.limit.labels(pool).set(state["limit"])
            self.running.labels(pool).set(state["running"])
            self.pending.labels(pool).set(state["pending"])

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)
