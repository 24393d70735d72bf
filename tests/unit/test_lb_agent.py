"""The LB agent's decisions, with fake processes, a fake validator and an
injected clock: what a new document starts, reloads and stops; what a
refused document leaves running; when a dead daemon starts again."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from cloudlet.agent.agent import Agent
from cloudlet.agent.daemons import Backoff, Daemon
from cloudlet.agent.decide import Actions, actions, unbound
from cloudlet.agent.hostops import HostOps
from cloudlet.agent.report import AgentReport, DaemonState
from cloudlet.agent.report import decode as decode_report
from cloudlet.agent.report import encode as encode_report
from cloudlet.agent.sourcekinds import SourceSpecError, parse_source
from cloudlet.agent.sources import FileSource, SourceError
from cloudlet.lb import Backend, LbConfig, Listener, Vrrp
from cloudlet.lb.document import digest, encode


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeProcess:
    next_pid = 1000

    def __init__(self, argv: Sequence[str]) -> None:
        FakeProcess.next_pid += 1
        self.pid = FakeProcess.next_pid
        self.argv = tuple(argv)
        self.code: int | None = None
        self.signals: list[int] = []

    def poll(self) -> int | None:
        return self.code

    def send_signal(self, sig: int) -> None:
        self.signals.append(int(sig))

    def terminate(self) -> None:
        self.code = -15

    def kill(self) -> None:
        self.code = -9

    def wait(self, timeout: float | None = None) -> int:
        assert self.code is not None
        return self.code


class Spawner:
    def __init__(self) -> None:
        self.started: list[FakeProcess] = []

    def __call__(self, argv: Sequence[str]) -> FakeProcess:
        proc = FakeProcess(argv)
        self.started.append(proc)
        return proc

    def of(self, daemon: str) -> list[FakeProcess]:
        return [p for p in self.started if p.argv[0] == daemon]


class Doc:
    """A source whose text the test sets."""

    def __init__(self) -> None:
        self.text: str | None = None
        self.fail = False

    def read(self) -> str | None:
        if self.fail:
            raise SourceError("metadata service unreachable")
        return self.text


# -- pure decisions --------------------------------------------------------------------


def test_actions_start_what_is_new_reload_what_changed_stop_what_has_no_work() -> None:
    got = actions(
        wanted={"haproxy", "keepalived"},
        managed={"haproxy", "nginx", "keepalived"},
        alive={"haproxy", "nginx", "keepalived"},
        changed={"haproxy"},
    )
    assert got == Actions(start=(), reload=("haproxy",), stop=("nginx",))
    # nothing changed: nothing reloaded (keepalived keeps its pid and the VIP)
    same = actions(
        {"haproxy", "keepalived"}, {"haproxy", "keepalived"}, {"haproxy", "keepalived"}, ()
    )
    assert same == Actions()
    # a daemon waiting for its restart starts now, on the new configuration
    down = actions({"haproxy", "nginx"}, {"haproxy"}, set(), {"haproxy", "nginx"})
    assert down == Actions(start=("haproxy", "nginx"))
    # keepalived stops first (the VIP moves before the proxies go)
    assert actions((), {"haproxy", "nginx", "keepalived"}, (), ()).stop == (
        "keepalived",
        "haproxy",
        "nginx",
    )


def test_backoff_doubles_to_a_cap_and_forgets_after_a_stable_run() -> None:
    b = Backoff(first=0.5, cap=4.0, stable=30.0)
    assert [b.after_exit(1.0) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert b.after_exit(31.0) == 0.5  # it ran long enough: healthy again
    assert b.after_exit(0.1) == 1.0


def test_a_dead_daemon_waits_its_delay_then_is_due() -> None:
    clock, spawn = Clock(), Spawner()
    d = Daemon("haproxy", ["haproxy", "-W"], spawn=spawn, clock=clock)
    assert d.check() == "stopped"
    d.start()
    assert d.check() == "running" and d.running
    clock.now += 2
    spawn.started[-1].code = 1
    assert d.check() == "died" and d.exit_code == 1 and not d.running
    assert d.restart_at == pytest.approx(clock.now + 0.5)
    clock.now += 0.4
    assert d.check() == "waiting"
    clock.now += 0.1
    assert d.check() == "due"
    d.start()
    assert d.check() == "running" and d.restart_at is None and len(spawn.started) == 2


def test_unbound_lists_rendered_listeners_not_yet_listening() -> None:
    cfg = LbConfig(
        "lb/x",
        (
            Listener("a", "tcp", "127.0.0.1", 80, (Backend("vm/a", "10.0.0.2", 80),)),
            Listener("b", "udp", "127.0.0.1", 53, (Backend("vm/a", "10.0.0.2", 53),)),
            Listener("c", "tcp", "127.0.0.1", 81, ()),  # no back-end: not rendered
        ),
        None,
        "/run/x",
    )
    assert unbound(cfg, {("tcp", 80)}) == [("udp", 53)]
    assert unbound(cfg, {("tcp", 80), ("udp", 53)}) == []


def test_source_kinds_table() -> None:
    src = parse_source("file:/run/x/lb.json")
    assert isinstance(src, FileSource) and src.path == Path("/run/x/lb.json")
    with pytest.raises(SourceSpecError, match="unknown kind 'ftp'"):
        parse_source("ftp://x")
    with pytest.raises(SourceSpecError, match="needs a path"):
        parse_source("file:")


def test_report_round_trip_keeps_pid_and_latest() -> None:
    r = AgentReport("lb/x", "ab", None, 1.5, (DaemonState("haproxy", 7, True),), (), 42, "cd")
    assert decode_report(encode_report(r)) == r
    old = '{"lb": null, "applied": null, "error": null, "at": 1.0}'  # an older agent's
    assert decode_report(old).pid is None and decode_report(old).latest is None


# -- the agent, with fake daemons and a fake validator ----------------------------------


class Fixture:
    def __init__(self, tmp: Path, refuse: str | None = None) -> None:
        self.clock, self.spawn, self.source = Clock(), Spawner(), Doc()
        self.checked: list[tuple[str, ...]] = []
        self.touched: list[str] = []
        self.refuse = refuse
        self.run = tmp / "run"
        self.agent = Agent(
            self.source,
            self.run,
            tmp / "report.json",
            clock=self.clock,
            wall=self.clock,
            spawn=self.spawn,
            check=self.check,
            host=HostOps(  # no host touched: every port listens at once
                nonlocal_bind=lambda: self.touched.append("nonlocal_bind"),
                drop_vip=lambda vrrp: self.touched.append(f"drop {vrrp.vip}"),
                bound=lambda: {(p, n) for p in ("tcp", "udp") for n in range(1, 65536)},
            ),
        )

    def check(self, argv: Sequence[str]) -> tuple[int, str]:
        self.checked.append(tuple(argv))
        if self.refuse is not None and argv[0] == self.refuse:
            return 1, f"[ALERT] {self.refuse} says no\nconfiguration file test failed"
        return 0, ""

    def cfg(self, *ports: int, udp: int | None = None, vrrp: bool = False) -> LbConfig:
        listeners = [
            Listener(f"lb-listener/t{p}", "tcp", "10.0.0.9", p, (Backend("vm/a", "10.0.0.2", p),))
            for p in ports
        ]
        if udp is not None:
            listeners.append(
                Listener(
                    "lb-listener/u", "udp", "10.0.0.9", udp, (Backend("vm/a", "10.0.0.2", udp),)
                )
            )
        v = Vrrp("vi", "eth0", "10.0.0.9/24", 9, 150, ("10.0.0.3",), "10.0.0.4") if vrrp else None
        return LbConfig("lb/x", tuple(listeners), v, str(self.run))

    def publish(self, cfg: LbConfig) -> str:
        self.source.text = encode(cfg)
        return digest(self.source.text)


def test_a_listener_change_reloads_the_proxy_and_leaves_keepalived_alone(tmp_path: Path) -> None:
    f = Fixture(tmp_path)
    first = f.publish(f.cfg(443, vrrp=True))
    assert f.agent.poll_source()
    assert f.agent.applied == first and f.agent.error is None
    (haproxy,), (keepalived,) = f.spawn.of("haproxy"), f.spawn.of("keepalived")
    assert f.touched == ["nonlocal_bind", "drop 10.0.0.9/24"]  # before keepalived started
    assert not f.agent.poll_source()  # the same text: nothing to do

    second = f.publish(f.cfg(443, 8443, udp=5000, vrrp=True))
    f.agent.poll_source()
    assert f.agent.applied == second
    assert haproxy.signals == [12]  # SIGUSR2: master-worker reload
    assert keepalived.signals == []  # its configuration did not change
    assert len(f.spawn.of("nginx")) == 1 and len(f.spawn.of("haproxy")) == 1
    assert "8443" in (f.run / "haproxy.cfg").read_text()

    f.publish(f.cfg(443, vrrp=True))
    f.agent.poll_source()
    assert f.spawn.of("nginx")[0].code == -15  # no UDP listener left: nginx stopped
    assert [d.name for d in f.agent.report().daemons] == ["haproxy", "keepalived"]


def test_a_refused_document_changes_nothing_and_is_reported(tmp_path: Path) -> None:
    f = Fixture(tmp_path)
    good = f.publish(f.cfg(443))
    f.agent.poll_source()
    before = (f.run / "haproxy.cfg").read_text()

    f.refuse = "haproxy"
    bad = f.publish(f.cfg(443, 8443))
    f.agent.poll_source()
    report = f.agent.report()
    assert (report.applied, report.latest) == (good, bad)
    assert report.error is not None and report.error.startswith("haproxy refuses")
    assert "configuration file test failed" in report.error
    assert (f.run / "haproxy.cfg").read_text() == before
    assert not list(f.run.glob("*.new"))
    assert f.spawn.of("haproxy")[0].signals == []

    f.source.text = "{not json"
    f.agent.poll_source()
    assert f.agent.applied == good and "does not decode" in str(f.agent.error)

    f.source.fail = True
    f.agent.poll_source()
    assert f.agent.applied == good and str(f.agent.error).startswith("source:")


def test_a_dead_daemon_is_restarted_with_backoff(tmp_path: Path) -> None:
    f = Fixture(tmp_path)
    f.publish(f.cfg(443))
    f.agent.poll_source()
    (first,) = f.spawn.of("haproxy")
    f.clock.now += 1
    first.code = 137
    assert f.agent.supervise()  # noticed
    assert not f.agent.report().daemons[0].running
    assert f.agent.next_due() == pytest.approx(f.clock.now + 0.5)
    f.clock.now += 0.3
    assert not f.agent.supervise() and len(f.spawn.of("haproxy")) == 1
    f.clock.now += 0.2
    assert f.agent.supervise()
    second = f.spawn.of("haproxy")[1]
    assert f.agent.report().daemons == (DaemonState("haproxy", second.pid, True),)
    f.clock.now += 0.1
    second.code = 1  # dies again at once: twice the delay
    f.agent.supervise()
    assert f.agent.next_due() == pytest.approx(f.clock.now + 1.0)
