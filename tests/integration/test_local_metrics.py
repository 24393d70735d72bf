"""Shepherd's LB metrics on ``local``, end to end: real traffic from the host
through the LB's haproxy and nginx, counted by the LB member's own
``cloudlet lb-agent`` (its report), and the daemon's metrics endpoint
serving the figures as ``cloudlet_lb_*``, read through the provider at
scrape time. Needs root; the host is left as it was (the ``site`` fixture).
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

from cloudlet.agent.report import AgentReport, ListenerStats, decode
from cloudlet.model.kinds import refs
from cloudlet.providers.local import reports

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

NAME = "edge-m"
N = 6


def _report(path: Path) -> AgentReport | None:
    try:
        return decode(path.read_text())
    except (OSError, ValueError):
        return None


def _figures(path: Path, since: float = 0.0) -> dict[str, ListenerStats]:
    """The listeners' figures of a report written after ``since`` ({} if none yet)."""
    got = _report(path)
    if got is None or got.at <= since:
        return {}
    return {x.listener: x for x in got.listeners}


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
    report_file = reports.report_path(s, lb.uid, member.uid)
    listeners = {
        (str(r.attrs["protocol"]), int(str(r.attrs["publicPort"]))): r.id
        for r in s.records.all()
        if r.kind == "lb-listener"
    }
    names = {listeners[(str(m["protocol"]), int(str(m["publicPort"])))]: m for m in mappings}

    # N sessions through each mapping; the agent's figures grow by exactly N (no
    # daemon runs yet, so no probe of Shepherd's comes in between)
    quiet = time.time() + 0.2  # after status's own probes
    _wait("every listener's figures", lambda: len(_figures(report_file, quiet)) == 3)
    before = _figures(report_file, quiet)
    for mapping in mappings:
        for _ in range(N):
            assert answers(mapping) == f"vm/{mapping['target']}", mapping

    sent = time.time() + 0.2

    def grown() -> bool:
        now = _figures(report_file, sent)
        return bool(now) and all(
            now[n].sessions_total - before[n].sessions_total >= N for n in names
        )

    _wait("the sessions counted", grown)
    after = _figures(report_file, sent)
    for name, mapping in names.items():
        b, a = before[name], after[name]
        assert a.sessions_total - b.sessions_total == N, (name, b, a)
        assert a.bytes_in > b.bytes_in and a.bytes_out > b.bytes_out, (name, b, a)
        if mapping["protocol"] == "udp":
            assert a.bytes_in - b.bytes_in == N * len(b"hello"), (name, b, a)
        assert {x.id: x.up for x in a.backends} == {f"vm/{mapping['target']}": True}, a

    here = {"cloudlet": NAME, "lb": lb.id, "member": member.id}
    with _daemon(site) as port:

        def scraped_as_reported() -> bool:
            """The scrape shows what the agent reported (both move: retry)."""
            text, now = _scrape(port), _figures(report_file)
            if _sample(text, "cloudlet_lb_agent_up", **here) != 1 or len(now) != 3:
                return False
            for name, mapping in names.items():
                one = {**here, "listener": name, "protocol": str(mapping["protocol"])}
                a, target = now[name], f"vm/{mapping['target']}"
                if (
                    _sample(text, "cloudlet_lb_sessions_total", **one),
                    _sample(text, "cloudlet_lb_bytes_in_total", **one),
                    _sample(text, "cloudlet_lb_bytes_out_total", **one),
                    _sample(text, "cloudlet_lb_backend_up", **one, backend=target),
                ) != (a.sessions_total, a.bytes_in, a.bytes_out, 1):
                    return False
            return True

        _wait("the scrape to show the agent's figures", scraped_as_reported)

        # a back-end stops behind our back: haproxy's checks see it, the agent
        # reports it, and so does the scrape
        chat = s.records.by_id("vm/chat")
        assert chat is not None
        (chat_listener,) = [n for n, m in names.items() if m["target"] == "chat"]
        chat_up = {**here, "listener": chat_listener, "protocol": "tcp", "backend": "vm/chat"}
        _wait(  # the daemon's first reconcile is over: nothing heals behind the test's back
            "the daemon's first reconcile",
            lambda: "cloudlet_last_successful_sync_timestamp_seconds{" in _scrape(port),
            timeout=60,
        )
        subprocess.run(["kill", "-9", str(chat.run["backend"])], check=True)
        _wait(
            "vm/chat down in the scrape",
            lambda: _sample(_scrape(port), "cloudlet_lb_backend_up", **chat_up) == 0,
        )

        # the agent stopped and its report gone (or torn): agent down, no figures, no crash
        agent = _report(report_file)
        assert agent is not None and agent.pid is not None
        os.kill(agent.pid, signal.SIGSTOP)
        try:
            report_file.unlink()
            text = _scrape(port)
            assert _sample(text, "cloudlet_lb_agent_up", **here) == 0
            assert "cloudlet_lb_sessions_total{" not in text
            report_file.write_text('{"lb": "lb/root", "at"')
            assert _sample(_scrape(port), "cloudlet_lb_agent_up", **here) == 0
        finally:
            os.kill(agent.pid, signal.SIGCONT)


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
