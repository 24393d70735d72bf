"""Shepherd's LB metrics: agent reports -> Prometheus series, read at scrape time."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from cloudlet.agent.report import AgentReport, BackendState, DaemonState, ListenerStats, encode
from cloudlet.shepherd.lbmetrics import LbCollector
from cloudlet.shepherd.metrics import Metrics

NOW = 1_000_000.0

WEB = ListenerStats(
    "lb-listener/web",
    "tcp",
    2,
    40,
    3120,
    2480,
    (BackendState("vm/a", True), BackendState("vm/b", False)),
)
GAME = ListenerStats(
    "lb-listener/game",
    "udp",
    0,
    8,
    48,
    35,
    (BackendState("vm/a", True), BackendState("vm/c", None)),
)


def report(at: float = NOW - 1, **kw: object) -> str:
    fields: dict[str, object] = {
        "lb": "lb/root",
        "applied": "sha256:abc",
        "error": None,
        "at": at,
        "daemons": (DaemonState("haproxy", 10, True), DaemonState("nginx", None, False)),
        "listeners": (WEB, GAME),
    }
    fields.update(kw)
    return encode(AgentReport(**fields))  # type: ignore[arg-type]


class Reports:
    """A platform with LB reports (what ``local`` answers from its files)."""

    def __init__(self, rows: dict[str, list[tuple[str, str, str | None]]]) -> None:
        self.rows = rows
        self.asked: list[str] = []

    def lb_reports(self, owner: str) -> list[tuple[str, str, str | None]]:
        self.asked.append(owner)
        if owner not in self.rows:
            raise OSError("the platform is down")
        return self.rows[owner]


class NoReports:
    def observe(self, owner: str) -> list[object]:
        return []


def registry(collector: LbCollector) -> CollectorRegistry:
    r = CollectorRegistry()
    r.register(collector)
    return r


def member(cl: str = "demo", lb: str = "lb/root", m: str = "vm/lb-1") -> dict[str, str]:
    return {"cloudlet": cl, "lb": lb, "member": m}


def listener(name: str, protocol: str, **kw: str) -> dict[str, str]:
    return {**member(), "listener": name, "protocol": protocol, **kw}


def test_a_fresh_report_gives_every_family_per_listener_and_backend():
    c = LbCollector(clock=lambda: NOW)
    c.watch("demo", Reports({"demo": [("lb/root", "vm/lb-1", report())]}))
    r = registry(c)
    web, game = listener("lb-listener/web", "tcp"), listener("lb-listener/game", "udp")
    assert r.get_sample_value("cloudlet_lb_agent_up", member()) == 1
    assert r.get_sample_value("cloudlet_lb_report_timestamp_seconds", member()) == NOW - 1
    assert r.get_sample_value("cloudlet_lb_config_applied", member()) == 1
    assert r.get_sample_value("cloudlet_lb_daemon_up", {**member(), "daemon": "haproxy"}) == 1
    assert r.get_sample_value("cloudlet_lb_daemon_up", {**member(), "daemon": "nginx"}) == 0
    assert r.get_sample_value("cloudlet_lb_sessions_current", web) == 2
    assert r.get_sample_value("cloudlet_lb_sessions_total", web) == 40
    assert r.get_sample_value("cloudlet_lb_bytes_in_total", web) == 3120
    assert r.get_sample_value("cloudlet_lb_bytes_out_total", web) == 2480
    assert r.get_sample_value("cloudlet_lb_sessions_total", game) == 8
    assert r.get_sample_value("cloudlet_lb_bytes_out_total", game) == 35
    up = "cloudlet_lb_backend_up"
    assert r.get_sample_value(up, {**web, "backend": "vm/a"}) == 1
    assert r.get_sample_value(up, {**web, "backend": "vm/b"}) == 0
    assert r.get_sample_value(up, {**game, "backend": "vm/a"}) == 1
    # what cannot be known is not exported as a number
    assert r.get_sample_value("cloudlet_lb_sessions_current", game) is None
    assert r.get_sample_value(up, {**game, "backend": "vm/c"}) is None
    text = generate_latest(r).decode()
    assert "# TYPE cloudlet_lb_sessions_total counter" in text
    assert "# TYPE cloudlet_lb_backend_up gauge" in text


def test_a_missing_torn_or_stale_report_is_an_agent_down_without_traffic_series():
    rows = [
        ("lb/root", "vm/lb-1", None),
        ("lb/root", "vm/lb-2", report()[:30]),
        ("lb/root", "vm/lb-3", report(at=NOW - 31)),
        ("lb/root", "vm/lb-4", report(at=NOW - 30)),
    ]
    c = LbCollector(clock=lambda: NOW, stale_after=30)
    c.watch("demo", Reports({"demo": rows}))
    r = registry(c)
    assert [
        r.get_sample_value("cloudlet_lb_agent_up", member(m=f"vm/lb-{i}")) for i in (1, 2, 3, 4)
    ] == [
        0,
        0,
        0,
        1,
    ]
    stale, live = member(m="vm/lb-3"), member(m="vm/lb-4")
    assert r.get_sample_value("cloudlet_lb_report_timestamp_seconds", stale) == NOW - 31
    web = {"listener": "lb-listener/web", "protocol": "tcp"}
    assert r.get_sample_value("cloudlet_lb_sessions_total", {**stale, **web}) is None
    assert r.get_sample_value("cloudlet_lb_sessions_total", {**live, **web}) == 40


def test_a_refused_document_shows_as_not_applied():
    c = LbCollector(clock=lambda: NOW)
    rows = [
        ("lb/root", "vm/lb-1", report(error="haproxy -c: bad config")),
        ("lb/root", "vm/lb-2", report(applied=None, listeners=())),
    ]
    c.watch("demo", Reports({"demo": rows}))
    r = registry(c)
    assert r.get_sample_value("cloudlet_lb_config_applied", member()) == 0
    assert r.get_sample_value("cloudlet_lb_config_applied", member(m="vm/lb-2")) == 0


def test_only_platforms_with_reports_are_asked_and_one_failing_spoils_nothing():
    c = LbCollector(clock=lambda: NOW)
    ok = Reports({"a": [("lb/root", "vm/lb-1", report())]})
    c.watch("a", ok)
    c.watch("broken", Reports({}))
    c.watch("elsewhere", NoReports())
    r = registry(c)
    assert r.get_sample_value("cloudlet_lb_agent_up", member(cl="a")) == 1
    assert ok.asked == ["a"]
    c.forget("a")
    assert r.get_sample_value("cloudlet_lb_agent_up", member(cl="a")) is None
    assert ok.asked == ["a"]  # a forgotten cloudlet is not read again


def test_a_platform_that_loses_its_reports_stops_being_watched():
    c = LbCollector(clock=lambda: NOW)
    c.watch("a", Reports({"a": [("lb/root", "vm/lb-1", report())]}))
    c.watch("a", NoReports())  # re-platformed
    assert registry(c).get_sample_value("cloudlet_lb_agent_up", member(cl="a")) is None


def test_the_daemon_s_registry_serves_the_lb_families():
    m = Metrics("replica-1")
    m.lbs.clock = lambda: NOW
    m.lbs.watch("demo", Reports({"demo": [("lb/root", "vm/lb-1", report())]}))
    web = listener("lb-listener/web", "tcp")
    assert m.registry.get_sample_value("cloudlet_lb_sessions_total", web) == 40
    assert "cloudlet_lb_bytes_in_total" in generate_latest(m.registry).decode()
