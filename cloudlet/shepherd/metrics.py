"""Prometheus metrics of the daemon: what operators alert on.

Names follow Prometheus conventions: a ``cloudlet_`` prefix, base units
(seconds), ``_total`` on counters (prometheus-client appends it). Each daemon
owns its registry so that tests can run several in one process. A series
labelled with a cloudlet lives only while this replica reconciles that
cloudlet (``forget``): a destroyed cloudlet, or one another replica took,
must not keep reporting its last figures as if they were current.

The endpoint (``serve``) is a small ``http.server`` rather than the client
library's, so that it can answer the probes too: ``/healthz`` (the process
is alive), ``/readyz`` (it can do its work) and ``/metrics``, and 404 for
anything else.
"""

from __future__ import annotations

import errno
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from cloudlet import __version__
from cloudlet.errors import CloudletError
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
            "cloudlet_queue_depth",
            "Cloudlets due for a reconcile that no worker has started yet (not scheduled resyncs).",
            registry=r,
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
        self.build_info = Gauge(
            "cloudlet_build_info",
            "Always 1; the running version in a label.",
            ["version"],
            registry=r,
        )
        self.build_info.labels(__version__).set(1)
        self._series: dict[str, set[tuple[str, str]]] = {}
        self._lock = threading.Lock()
        #: The LB agents' figures (``cloudlet_lb_*``), read from the providers at scrape time.
        self.lbs = LbCollector()
        r.register(self.lbs)
        # The client library's process_*, python_info and python_gc_* on this registry.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)

    def _per_cloudlet(self) -> tuple[Gauge, ...]:
        """Every metric whose series are per cloudlet, by its ``cloudlet`` label."""
        return (self.drifted, self.resources, self.last_success)

    def forget(self, name: str) -> None:
        """Drop every series of ``name``: destroyed, or no longer this replica's."""
        with self._lock:
            for metric in self._per_cloudlet():
                metric.remove_by_labels({"cloudlet": name})
            self._series.pop(name, None)
        self.lbs.forget(name)

    def serve(
        self, port: int, addr: str = "127.0.0.1", ready: Callable[[], str | None] = lambda: None
    ) -> ThreadingHTTPServer:
        """Listen on ``addr:port`` in a background thread; ``ready`` returns
        why the daemon is not ready, or None when it is. An address in use or
        not ours is an operator's mistake, said in one line."""
        handler = _handler(self.registry, ready)
        try:
            server = ThreadingHTTPServer((addr, port), handler)
        except OverflowError as err:  # a port out of range
            raise CloudletError(f"metrics port {port} is out of range (1-65535)") from err
        except OSError as err:
            where = f"{addr}:{port}"
            if err.errno == errno.EADDRINUSE:
                raise CloudletError(f"metrics port {where} is in use") from err
            if err.errno in (errno.EACCES, errno.EPERM):
                raise CloudletError(f"metrics port {where}: permission denied") from err
            raise CloudletError(f"cannot listen on metrics address {where}: {err}") from err
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        return server

    def record_steps(self, steps: Sequence[Any]) -> None:
        for s in steps:
            self.actions.labels(s.id.partition("/")[0], s.phase, s.outcome).inc()

    def record_status(self, name: str, status: Status, converged: bool) -> None:
        counts = Tally((r.kind, r.state) for r in status.resources)
        with self._lock:
            self.drifted.labels(name).set(len(status.drift))
            for gone in self._series.get(name, set()) - set(counts):
                self.resources.remove(name, *gone)
            for (kind, state), n in counts.items():
                self.resources.labels(name, kind, state).set(n)
            self._series[name] = set(counts)
            if converged:
                self.last_success.labels(name).set(time.time())


def _handler(
    registry: CollectorRegistry, ready: Callable[[], str | None]
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        """``/metrics``, ``/healthz``, ``/readyz``; 404 elsewhere."""

        def do_GET(self) -> None:
            path = self.path.partition("?")[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._send(200, b"ok\n")
            elif path == "/readyz":
                why = ready()
                if why is None:
                    self._send(200, b"ready\n")
                else:
                    self._send(503, f"not ready: {why}\n".encode())
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

        def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None  # a scrape every few seconds is not news

    return Handler


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
