"""Prometheus metrics of the daemon: what operators alert on.

Names follow Prometheus conventions: a ``cloudlet_`` prefix, base units
(seconds), ``_total`` on counters (prometheus-client appends it). Each daemon
owns its registry so that tests can run several in one process.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from cloudlet.model.resources import Observed, Resource
from cloudlet.providers.base import HostReachable, Provider
from cloudlet.shepherd.lbmetrics import LbCollector
from cloudlet.shepherd.status import Status

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self, replica: str, registry: CollectorRegistry | None = None) -> None:
        self.replica = replica
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.reconcile_seconds = Histogram(
            "cloudlet_reconcile_duration_seconds",
            "Wall time of one reconcile of one cloudlet.",
            ["outcome"],
            buckets=BUCKETS,
            registry=r,
        )
        self.actions = Counter(
            "cloudlet_actions",
            "Provider steps run, by resource kind, operation and outcome.",
            ["kind", "op", "outcome"],
            registry=r,
        )
        self.drifted = Gauge(
            "cloudlet_drifted_resources",
            "Resources whose actual state differs from the desired state, as last observed.",
            ["cloudlet"],
            registry=r,
        )
        self.resources = Gauge(
            "cloudlet_resources",
            "Resources by kind and observed state.",
            ["cloudlet", "kind", "state"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "cloudlet_queue_depth", "Cloudlets waiting in the work queue.", registry=r
        )
        self.owned = Gauge(
            "cloudlet_owned_cloudlets",
            "Cloudlets this replica reconciles.",
            ["replica"],
            registry=r,
        )
        self.last_success = Gauge(
            "cloudlet_last_successful_sync_timestamp_seconds",
            "Unix time of the last sync that converged.",
            ["cloudlet"],
            registry=r,
        )
        self.provider_seconds = Histogram(
            "cloudlet_provider_call_duration_seconds",
            "Latency of orchestrator API calls.",
            ["op", "outcome"],
            buckets=BUCKETS,
            registry=r,
        )
        self._series: dict[str, set[tuple[str, str]]] = {}
        #: The LB agents' figures (``cloudlet_lb_*``), read from the providers at scrape time.
        self.lbs = LbCollector()
        r.register(self.lbs)

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)

    def record_steps(self, steps: Sequence[Any]) -> None:
        for s in steps:
            self.actions.labels(s.id.partition("/")[0], s.phase, s.outcome).inc()

    def record_status(self, name: str, status: Status, converged: bool) -> None:
        self.drifted.labels(name).set(len(status.drift))
        counts = Tally((r.kind, r.state) for r in status.resources)
        for gone in self._series.get(name, set()) - set(counts):
            self.resources.remove(name, *gone)
        for (kind, state), n in counts.items():
            self.resources.labels(name, kind, state).set(n)
        self._series[name] = set(counts)
        if converged:
            self.last_success.labels(name).set(time.time())


def reaches_public_addresses(provider: object) -> bool:
    """Whether this host reaches the provider's public addresses (so Shepherd probes them)."""
    return isinstance(provider, HostReachable) and provider.public_addresses_reachable_from_host


class InstrumentedProvider:
    """Times every call of a provider into ``cloudlet_provider_call_duration_seconds``."""

    def __init__(self, inner: Provider, metrics: Metrics) -> None:
        self.inner = inner
        self.metrics = metrics
        self.public_addresses_reachable_from_host = reaches_public_addresses(inner)

    def _timed(self, op: str, fn: Any, *args: Any) -> Any:
        t = time.perf_counter()
        outcome = "error"
        try:
            result = fn(*args)
            outcome = "ok"
            return result
        finally:
            self.metrics.provider_seconds.labels(op, outcome).observe(time.perf_counter() - t)

    def observe(self, owner: str) -> list[Observed]:
        result: list[Observed] = self._timed("observe", self.inner.observe, owner)
        return result

    def create(self, owner: str, resource: Resource) -> Observed:
        result: Observed = self._timed("create", self.inner.create, owner, resource)
        return result

    def update(self, owner: str, resource: Resource, current: Observed) -> Observed:
        result: Observed = self._timed("update", self.inner.update, owner, resource, current)
        return result

    def delete(self, owner: str, current: Observed) -> None:
        self._timed("delete", self.inner.delete, owner, current)

    def replacement_reason(self, resource: Resource, current: Observed) -> str | None:
        return self.inner.replacement_reason(resource, current)

    def close(self) -> None:
        self.inner.close()
