"""Shepherd's LB metrics on ``local``, end to end: real traffic from the host
through the LB's haproxy and nginx, their figures collected, and the daemon's
metrics endpoint serving them as ``cloudlet_lb_*``.

Until ``cloudlet lb-agent`` runs inside the LB namespace and writes its own
report, this test plays the agent's part: it collects the figures with
:func:`cloudlet.agent.stats.collect` (the function the agent calls) and
writes the report where ``local`` reads it (``reports.report_path``). The
rest is real: the daemon reads the file through the provider at scrape time.
Needs root; the host is left as it was (the ``site`` fixture checks).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import cli_argv, cli_env
from localsite import (  # noqa: F401 - local_site is the fixture `site`
    Site,
    answers,
    local_site,
    spec,
    status,
    sync,
)

from cloudlet.agent import stats
from cloudlet.agent.report import AgentReport, ListenerStats, encode
from cloudlet.lb import LbConfig, document
from cloudlet.model.kinds import ref, refs
from cloudlet.providers.local import lbs, reports
from cloudlet.providers.local.records import Record

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

NAME = "edge-m"
N = 6


def _agent_config(site: Site, lb: Record, member: Record) -> LbConfig:
    """The configuration the member's agent runs, rebuilt from the records as
    ``lbs.refresh`` builds it (VRRP left out: statistics do not need it)."""
    listeners = [r for r in site.records.all() if r.kind == "lb-listener" and lb.id in r.deps]
    public = site.records.by_id(str(ref(lb.attrs, "address")))
    if public is not None and public.kind == "floating-ip":
        public = site.records.by_id(str(ref(public.attrs, "target")))
    bind = str(public.attrs.get("address")) if public else "0.0.0.0"
    targets = {t for r in listeners for t in refs(r.attrs, "targets")}
    backends = {t: lbs.backend_address(site, t) for t in targets}
    return document.build(
        lb.id,
        [(r.id, r.attrs) for r in listeners],
        bind,
        backends,
        str(site.lb_dir(lb.uid, member.uid)),
    )


def _write_report(path: Path, report: AgentReport) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(encode(report))
    os.replace(tmp, path)


def _wait(what: str, check: Callable[[], object], timeout: float = 20.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())
    except OSError:
        return ""


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the one series ``name`` whose labels include ``labels``."""
    want = [f'{k}="{v}"' for k, v in labels.items()]
    found = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and all(w in line for w in want)
    ]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def _by_name(cfg: LbConfig) -> dict[str, ListenerStats]:
    return {s.listener: s for s in stats.collect(cfg)}


def test_the_daemon_serves_the_lb_figures_of_real_traffic(site: Path, tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(spec(NAME))
    sync(site, path)
    mappings = status(site, NAME)["portMappings"]
    assert isinstance(mappings, list) and len(mappings) == 3
    s = Site(site / "local", NAME)
    (lb,) = [r for r in s.records.all() if r.kind == "lb"]
    (member_id,) = refs(lb.attrs, "members")
    member = s.records.by_id(member_id)
    assert member is not None
    cfg = _agent_config(s, lb, member)
    by_port = {(li.protocol, li.port): li.name for li in cfg.listeners}
    names = {by_port[(str(m["protocol"]), int(str(m["publicPort"])))]: m for m in mappings}

    # N sessions through each mapping; the figures grow by exactly N (Shepherd's own
    # probes from sync and status came before the first collection)
    before = _wait("every listener's figures", lambda: len(_by_name(cfg)) == 3 and _by_name(cfg))
    assert isinstance(before, dict)
    for mapping in mappings:
        for _ in range(N):
            assert answers(mapping) == f"vm/{mapping['target']}", mapping

    def grown() -> dict[str, ListenerStats] | None:
        now = _by_name(cfg)
        done = all(now[n].sessions_total - before[n].sessions_total >= N for n in names)
        return now if done else None

    after = _wait("the sessions counted", grown)
    assert isinstance(after, dict)
    for name, mapping in names.items():
        b, a = before[name], after[name]
        assert a.sessions_total - b.sessions_total == N, (name, b, a)
        assert a.bytes_in > b.bytes_in and a.bytes_out > b.bytes_out, (name, b, a)
        if mapping["protocol"] == "udp":
            assert a.bytes_in - b.bytes_in == N * len(b"hello"), (name, b, a)
        assert {x.id: x.up for x in a.backends} == {f"vm/{mapping['target']}": True}, a

    report_file = reports.report_path(s, lb.uid, member.uid)
    _write_report(
        report_file, AgentReport(lb.id, "test", None, time.time(), (), tuple(after.values()))
    )
    here = {"cloudlet": NAME, "lb": lb.id, "member": member.id}
    with _daemon(site) as port:
        text = str(
            _wait(
                "the LB series",
                lambda: "cloudlet_lb_sessions_total{" in _scrape(port) and _scrape(port),
            )
        )
        assert _sample(text, "cloudlet_lb_agent_up", **here) == 1
        for name, mapping in names.items():
            one = {**here, "listener": name, "protocol": str(mapping["protocol"])}
            a = after[name]
            assert _sample(text, "cloudlet_lb_sessions_total", **one) == a.sessions_total
            assert _sample(text, "cloudlet_lb_bytes_in_total", **one) == a.bytes_in
            assert _sample(text, "cloudlet_lb_bytes_out_total", **one) == a.bytes_out
            target = f"vm/{mapping['target']}"
            assert _sample(text, "cloudlet_lb_backend_up", **one, backend=target) == 1

        # a back-end stops behind our back: haproxy's checks see it, and so does the scrape
        chat = s.records.by_id("vm/chat")
        assert chat is not None
        subprocess.run(["kill", "-9", str(chat.run["backend"])], check=True)
        (chat_listener,) = [n for n, m in names.items() if m["target"] == "chat"]
        down = _wait(
            "vm/chat down",
            lambda: (now := _by_name(cfg))[chat_listener].backends[0].up is False and now,
        )
        assert isinstance(down, dict)
        _write_report(
            report_file, AgentReport(lb.id, "test", None, time.time(), (), tuple(down.values()))
        )
        chat_up = {**here, "listener": chat_listener, "protocol": "tcp", "backend": "vm/chat"}
        _wait(
            "vm/chat down in the scrape",
            lambda: _sample(_scrape(port), "cloudlet_lb_backend_up", **chat_up) == 0,
        )

        # no report (the agent is gone) or a torn one: agent down, no figures, no crash
        report_file.unlink()
        text = _scrape(port)
        assert _sample(text, "cloudlet_lb_agent_up", **here) == 0
        assert "cloudlet_lb_sessions_total{" not in text
        report_file.write_text('{"lb": "lb/root", "at"')
        assert _sample(_scrape(port), "cloudlet_lb_agent_up", **here) == 0


class _daemon:
    """``cloudlet reconcile`` with its metrics endpoint, for the body of a test."""

    def __init__(self, site: Path) -> None:
        self.site = site
        self.log = site.parent / "daemon.log"

    def __enter__(self) -> int:
        self.port = _free_port()
        argv = cli_argv(
            self.site, "reconcile", "--resync", "3600", "--metrics-port", str(self.port)
        )
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=cli_env(), cwd=self.site
            )
        try:
            _wait("the metrics endpoint", lambda: _scrape(self.port))
        except BaseException:
            self.__exit__()
            raise
        return self.port

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        text = self.log.read_text()
        assert "Traceback" not in text, text
