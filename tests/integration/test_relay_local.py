"""Shell and logs through the relay on a real ``local`` cloudlet (issue 12).

One cloudlet of two VMs is synced for the module; a relay (``cloudlet
relay``, TLS with a throwaway self-signed certificate made here, sites
authenticated by a site CA made here too) and the site side (``cloudlet
relay-agent``, dialling out with a site certificate naming the cloudlet)
run as real processes
on 127.0.0.1; the user's ``cloudlet shell`` runs on a real pseudo-terminal.
Needs root (namespaces); the host is left as it was (``localsite``).
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import sqlite3
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from localsite import Site, _scrub, cli, host_state, ok
from relaykit import (
    Agent,
    Relay,
    SiteCA,
    argv,
    audit_records,
    env,
    free_port,
    make_cert,
    two_vms,
    wait_for,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

NAME = "relay-a"
SPEC = two_vms(NAME, "local", "10.62.0.0/24")


class Setup:
    def __init__(self, state: Path, relay: Relay, agent: Agent, ca: SiteCA) -> None:
        self.state, self.relay, self.agent, self.ca = state, relay, agent, ca
        self.site = Site(state / "local", NAME)

    def registrations(self) -> int:
        return self.agent.registrations()

    def token(self, vm: str, ttl: str = "300", sessions: str = "1") -> str:
        args = ("token", "issue", NAME, vm, "--ttl", ttl, "--sessions", sessions)
        proc = ok(cli(*args, state_dir=self.state))
        return proc.stdout.strip()

    def user(self, token: str, *args: str, kind: str = "shell", vm: str = "game") -> list[str]:
        flags = ["--relay", f"127.0.0.1:{self.relay.port}", "--token", token]
        return argv(self.state, kind, NAME, vm, *flags, "--tls-ca", str(self.relay.cert), *args)

    def run(self, token: str, *args: str, **kw: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.user(token, *args, **kw), capture_output=True, text=True, timeout=30,
            stdin=subprocess.DEVNULL, env=env(), check=False,
        )  # fmt: skip

    def vm_ns(self, vm: str) -> str:
        record = self.site.records.by_id(f"vm/{vm}")
        assert record is not None
        return self.site.ns(record.uid)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("relay")
    state = tmp / "state"
    state.mkdir()
    before = host_state(state)
    ca = SiteCA(tmp)
    relay = Relay(state, free_port(), *make_cert(tmp), tmp / "relay.log", ca.path)
    agent: Agent | None = None
    try:
        (tmp / "a.yaml").write_text(SPEC)
        ok(cli("sync", tmp / "a.yaml", "--yes", state_dir=state))
        relay.start()
        site_cert = ca.site("site-under-test", NAME)
        agent = Agent(state, relay, "site-under-test", tmp / "agent.log", site_cert)
        s = Setup(state, relay, agent, ca)
        wait_for("the site's registration", lambda: s.registrations() >= 1)
        yield s
    finally:
        if agent is not None:
            agent.stop()
        relay.stop()
        cli("destroy", NAME, "--yes", state_dir=state)
        _scrub(state, [NAME])
        assert host_state(state) == before, "the host is not as it was"


class Terminal:
    """The user's ``cloudlet shell`` on a real pseudo-terminal."""

    def __init__(self, cmd: list[str]) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            cmd, stdin=slave, stdout=slave, stderr=slave, env={**env(), "TERM": "dumb"},
            start_new_session=True,
        )  # fmt: skip
        os.close(slave)
        self.seen = b""

    def read_until(self, pattern: bytes, timeout: float = 15.0) -> re.Match[bytes]:
        deadline = time.monotonic() + timeout
        while (m := re.search(pattern, self.seen)) is None:
            left = deadline - time.monotonic()
            assert left > 0, f"no {pattern!r} in {self.seen[-500:]!r}"
            if select.select([self.master], [], [], left)[0]:
                try:
                    self.seen += os.read(self.master, 4096)
                except OSError:  # the client exited
                    assert re.search(pattern, self.seen), f"no {pattern!r} in {self.seen!r}"
        self.seen = self.seen[m.end() :]
        return m

    def type(self, text: bytes) -> None:
        os.write(self.master, text)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        os.close(self.master)


def test_an_interactive_shell_runs_in_the_vm_namespace_through_the_relay(setup: Setup) -> None:
    term = Terminal(setup.user(setup.token("game")))
    try:
        term.read_until(rf"{NAME}/game# ".encode())
        term.type(b"echo hi-$$; ip netns identify\r")
        m = term.read_until(rb"\r\nhi-(\d+)\r\n(\S+)\r\n")
        assert m.group(2).decode() == setup.vm_ns("game")  # the VM's namespace, for real
        term.read_until(rf"{NAME}/game# ".encode())
        rtts = []
        for _ in range(50):  # each key echoed by the VM's terminal, through the relay
            start = time.perf_counter()
            term.type(b"x")
            term.read_until(b"x")
            rtts.append(time.perf_counter() - start)
        median = statistics.median(rtts) * 1000
        print(
            f"\nrelay keystroke round trip: median {median:.2f} ms, max {max(rtts) * 1000:.2f} ms"
        )
        term.type(b"\x15exit 7\r")  # ^U drops the x's
        assert term.proc.wait(15) == 7  # the remote shell's status is the command's
    finally:
        term.close()
    assert median < 100, f"median keystroke round trip {median:.1f} ms"


def test_a_command_exit_status_and_streams_come_back(setup: Setup) -> None:
    token = setup.token("chat")
    proc = setup.run(token, "--", "sh", "-c", "echo out; echo err >&2; exit 3", vm="chat")
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "out\n", "err\n"), proc


def test_logs_print_and_follow_the_vm_backend_log(setup: Setup) -> None:
    token = setup.token("game", sessions="2")  # one to print, one to follow
    record = setup.site.records.by_id("vm/game")
    assert record is not None
    path = setup.site.run_dir(record.uid) / "backend.log"
    with open(path, "a") as f:
        f.write("a line the back-end wrote\n")
    proc = setup.run(token, kind="logs")
    assert proc.returncode == 0, proc
    assert proc.stdout.endswith("a line the back-end wrote\n"), proc.stdout
    follower = subprocess.Popen(
        setup.user(token, "-f", kind="logs"), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
        env=env(),
    )  # fmt: skip
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == b"a line the back-end wrote\n"
        with open(path, "a") as f:
            f.write("appended later\n")
        assert follower.stdout.readline() == b"appended later\n"
    finally:
        follower.kill()
        follower.wait(10)


@pytest.mark.parametrize("which", ["wrong", "expired", "other-vm", "other-cloudlet-vm"])
def test_a_token_that_does_not_fit_is_refused_in_one_line(setup: Setup, which: str) -> None:
    if which == "wrong":
        token, why = setup.token("game").split(".")[0] + ".not-the-secret", "unknown token"
    elif which == "expired":
        token, why = setup.token("game", ttl="0.3"), "expired"
        time.sleep(0.5)
    else:
        token, why = setup.token("chat"), f"is for {NAME} vm/chat, not {NAME} vm/game"
    proc = setup.run(token, "--", "true")
    assert proc.returncode == 1, proc
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cloudlet: relay refused: token refused: ")
    assert why in lines[0], lines
    assert proc.stdout == ""
    tid, secret = token.split(".")
    [rec] = [r for r in _audit(setup.state, tid) if r["event"] == "refused"]
    assert (rec["role"], rec["cloudlet"], rec["vm"], rec["kind"]) == (
        "user",
        NAME,
        "vm/game",
        "shell",
    )
    assert why in str(rec["reason"]) and secret not in json.dumps(rec)


def test_the_site_side_accepts_no_inbound_connection(setup: Setup) -> None:
    pid = setup.agent.proc.pid
    listening = subprocess.run(["ss", "-lntupH"], capture_output=True, text=True, check=True).stdout
    assert f"pid={pid}," not in listening, listening
    connected = subprocess.run(["ss", "-tnpH"], capture_output=True, text=True, check=True).stdout
    mine = [line.split() for line in connected.splitlines() if f"pid={pid}," in line]
    assert mine, connected  # its control connection...
    assert {cols[4] for cols in mine} == {f"127.0.0.1:{setup.relay.port}"}  # ...out to the relay


def _audit(state: Path, token_id: str) -> list[dict[str, object]]:
    return [r for r in audit_records(state, NAME) if r["token"] == token_id]


def test_sessions_are_audited_in_the_store_and_the_relay_log(setup: Setup) -> None:
    token = setup.token("game")
    tid, secret = token.split(".")
    assert setup.run(token, "--", "echo", "audited").stdout == "audited\n"
    wait_for(
        "the session's end record", lambda: [r["end"] for r in _audit(setup.state, tid)] != [None]
    )
    [rec] = _audit(setup.state, tid)
    assert (rec["cloudlet"], rec["vm"], rec["kind"], rec["cmd"], rec["outcome"]) == (
        NAME, "vm/game", "shell", ["echo", "audited"], "ended",
    )  # fmt: skip
    assert isinstance(rec["end"], float) and isinstance(rec["start"], float)
    assert rec["end"] >= rec["start"]
    assert rec["bytesUp"] == 5  # one EOF frame: stdin was empty
    assert rec["bytesDown"] == 5 + len("audited\n") + 9  # a DATA frame, the EXIT frame
    with sqlite3.connect(setup.state / "state.db") as db:
        stored = db.execute("SELECT value FROM kv WHERE key LIKE '/cloudlet/tokens/%'").fetchall()
    assert stored and all(secret not in v.decode() for (v,) in stored)  # only hashes kept
    said = [line for line in setup.relay.log.read_text().splitlines() if f"token {tid}" in line]
    assert len(said) == 1, setup.relay.log.read_text()
    assert re.search(rf"{NAME} vm/game shell: \d+\.\d s, 5 bytes up, 22 down", said[0]), said


def test_a_relay_restart_is_survived(setup: Setup) -> None:
    before = setup.registrations()
    setup.relay.stop()
    setup.relay.start()
    wait_for("the site's reconnection", lambda: setup.registrations() > before)
    proc = setup.run(setup.token("game"), "--", "echo", "again")
    assert (proc.returncode, proc.stdout) == (0, "again\n"), proc
    assert setup.agent.proc.poll() is None  # the same site process


def test_the_daemon_serves_sessions_and_listens_on_its_metrics_port_only(
    setup: Setup, tmp_path: Path
) -> None:
    """``cloudlet reconcile --relay``: the site side inside the daemon. Last
    in this file: it takes the cloudlet over from the relay-agent."""
    metrics, log = free_port(), tmp_path / "daemon.log"
    cert, key = setup.ca.site("daemon-under-test", "relay-*")  # a pattern grants it too
    with open(log, "ab") as out:
        daemon = subprocess.Popen(
            argv(setup.state, "reconcile", "--metrics-port", str(metrics),
                 "--relay", f"127.0.0.1:{setup.relay.port}", "--relay-ca", str(setup.relay.cert),
                 "--relay-cert", str(cert), "--relay-key", str(key),
                 "--relay-site-id", "daemon-under-test"),
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env(),
        )  # fmt: skip
    try:
        wait_for("the daemon's registration", lambda: "registered with relay" in log.read_text())
        token = setup.token("game")
        proc = setup.run(token, "--", "echo", "via-daemon")
        assert (proc.returncode, proc.stdout) == (0, "via-daemon\n"), (proc, log.read_text())
        tid = token.split(".")[0]
        wait_for("the end record", lambda: [r["end"] for r in _audit(setup.state, tid)] != [None])
        assert [r["site"] for r in _audit(setup.state, tid)] == ["daemon-under-test"]
        ss = subprocess.run(["ss", "-lntupH"], capture_output=True, text=True, check=True).stdout
        listening = [line.split()[4] for line in ss.splitlines() if f"pid={daemon.pid}," in line]
        assert listening == [f"127.0.0.1:{metrics}"], ss
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0, log.read_text()
