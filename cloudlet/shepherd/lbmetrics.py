"""The LB agents' reports as Prometheus metrics, read at scrape time.

As the architecture's Shepherd scrapes its load balancers: per listener the
sessions and bytes each LB member VM's proxy counted, and whether each
back-end is up as the proxy sees it. A custom collector reads the reports
when Prometheus scrapes (through the provider's optional
:class:`~cloudlet.providers.base.LbReports`), so the figures are as fresh
as the agent's last report and nothing is kept between scrapes: an LB that
is gone leaves no series behind.

Labels: ``cloudlet``, ``lb`` (the LB's resource id), ``member`` (the LB VM:
with ``redundancy: vip`` two proxies count separately, so sum over
``member`` for the LB), ``listener`` (the listener's resource id) and
``protocol``; ``backend`` (the target VM's id) on ``cloudlet_lb_backend_up``.

A report older than :data:`STALE_AFTER` seconds, missing or unreadable
means the agent is down: ``cloudlet_lb_agent_up`` 0 and no traffic series
for that member (stale counters would lie). ``sessions_current`` is exported
for TCP only: nginx cannot tell the UDP sessions in flight (see
:mod:`cloudlet.agent.stats`); likewise a back-end whose state the proxy
cannot tell has no ``backend_up`` sample.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import attrs
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from cloudlet.agent.report import AgentReport, decode
from cloudlet.providers.base import LbReports

log = logging.getLogger("cloudlet.shepherd")

#: Seconds after which an agent's report no longer counts as live.
STALE_AFTER = 30.0

_MEMBER = ["cloudlet", "lb", "member"]
_LISTENER = [*_MEMBER, "listener", "protocol"]


@attrs.frozen
class MemberReport:
    """One LB member VM's report as Shepherd found it (None: none to read)."""

    cloudlet: str
    lb: str
    member: str
    report: AgentReport | None


def _families() -> dict[str, GaugeMetricFamily | CounterMetricFamily]:
    return {
        "agent_up": GaugeMetricFamily(
            "cloudlet_lb_agent_up",
            "1 if the LB agent of this member VM reported within the staleness bound, else 0.",
            labels=_MEMBER,
        ),
        "report_at": GaugeMetricFamily(
            "cloudlet_lb_report_timestamp_seconds",
            "Unix time of the LB agent's last report.",
            labels=_MEMBER,
        ),
        "applied": GaugeMetricFamily(
            "cloudlet_lb_config_applied",
            "1 if the agent runs its newest LB document, 0 if it refused it or runs none.",
            labels=_MEMBER,
        ),
        "daemon_up": GaugeMetricFamily(
            "cloudlet_lb_daemon_up",
            "1 if the LB daemon (haproxy, nginx, keepalived) runs, as its agent reports.",
            labels=[*_MEMBER, "daemon"],
        ),
        "current": GaugeMetricFamily(
            "cloudlet_lb_sessions_current",
            "Sessions open through the listener now (TCP only).",
            labels=_LISTENER,
        ),
        "sessions": CounterMetricFamily(
            "cloudlet_lb_sessions",
            "Sessions through the listener (resets when the proxy restarts or reloads).",
            labels=_LISTENER,
        ),
        "bytes_in": CounterMetricFamily(
            "cloudlet_lb_bytes_in",
            "Bytes received from clients by the listener.",
            labels=_LISTENER,
        ),
        "bytes_out": CounterMetricFamily(
            "cloudlet_lb_bytes_out",
            "Bytes sent to clients by the listener.",
            labels=_LISTENER,
        ),
        "backend_up": GaugeMetricFamily(
            "cloudlet_lb_backend_up",
            "1 if the proxy sees the listener's back-end up (haproxy's checks; for UDP "
            "whether nginx's newest session to it was answered), else 0.",
            labels=[*_LISTENER, "backend"],
        ),
    }


def families(
    reports: Iterable[MemberReport], now: float, stale_after: float = STALE_AFTER
) -> list[Metric]:
    """The metric families of ``reports`` at time ``now``; pure."""
    f = _families()
    for m in reports:
        member = [m.cloudlet, m.lb, m.member]
        r = m.report
        fresh = r is not None and now - r.at <= stale_after
        f["agent_up"].add_metric(member, 1 if fresh else 0)
        if r is None:
            continue
        f["report_at"].add_metric(member, r.at)
        if not fresh:
            continue
        f["applied"].add_metric(member, 1 if r.applied is not None and r.error is None else 0)
        for d in r.daemons:
            f["daemon_up"].add_metric([*member, d.name], 1 if d.running else 0)
        for s in r.listeners:
            labels = [*member, s.listener, s.protocol]
            if s.protocol == "tcp":
                f["current"].add_metric(labels, s.sessions_current)
            f["sessions"].add_metric(labels, s.sessions_total)
            f["bytes_in"].add_metric(labels, s.bytes_in)
            f["bytes_out"].add_metric(labels, s.bytes_out)
            for b in s.backends:
                if b.up is not None:
                    f["backend_up"].add_metric([*labels, b.id], 1 if b.up else 0)
    return list(f.values())


def _decoded(text: str | None) -> AgentReport | None:
    if text is None:
        return None
    try:
        return decode(text)
    except ValueError:
        return None  # a torn or foreign file: as good as none


class LbCollector:
    """A prometheus-client collector over the LBs of the cloudlets it watches.

    The daemon watches each cloudlet it reconciles (with the provider it
    reconciles it through) and forgets one it no longer owns or that is gone.
    A provider without :class:`LbReports` is not watched: its platform has
    no agent reports to read (yet)."""

    def __init__(
        self, clock: Callable[[], float] = time.time, stale_after: float = STALE_AFTER
    ) -> None:
        self.clock = clock
        self.stale_after = stale_after
        self._lock = threading.Lock()
        self._watched: dict[str, LbReports] = {}

    def watch(self, cloudlet: str, provider: object) -> None:
        with self._lock:
            if isinstance(provider, LbReports):
                self._watched[cloudlet] = provider
            else:
                self._watched.pop(cloudlet, None)

    def forget(self, cloudlet: str) -> None:
        with self._lock:
            self._watched.pop(cloudlet, None)

    def reports(self) -> list[MemberReport]:
        with self._lock:
            watched = sorted(self._watched.items())
        out = []
        for cloudlet, provider in watched:
            try:
                found = provider.lb_reports(cloudlet)
            except Exception as err:  # one platform's trouble must not fail the scrape
                log.warning("cloudlet %s: cannot read LB reports: %s", cloudlet, err)
                continue
            out += [MemberReport(cloudlet, lb, m, _decoded(text)) for lb, m, text in found]
        return out

    def collect(self) -> Iterator[Metric]:
        yield from families(self.reports(), self.clock(), self.stale_after)

    def describe(self) -> Iterator[Metric]:
        """The families without samples: registration checks names, reads no report."""
        yield from _families().values()
