"""``cloudlet lb-agent`` for real: haproxy, nginx and keepalived run by the
agent inside a network namespace this test makes (``cl-test-<random>``) and
deletes with every process in it, even when it fails. All traffic stays in
that namespace (127.0.0.1 and a veth pair of its own); no host interface is
touched. Needs root and the data-plane packages (``make dataplane-deps``).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest

from cloudlet.agent.report import AgentReport
from cloudlet.agent.report import decode as decode_report
from cloudlet.lb import Backend, LbConfig, Listener, Vrrp
from cloudlet.lb.document import digest, encode

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(
        any(shutil.which(b) is None for b in ("ip", "haproxy", "nginx", "keepalived")),
        reason="needs haproxy, nginx and keepalived (make dataplane-deps)",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
VIP = "10.255.0.100/24"

# Back-ends in the namespace: TCP echoes every line (a long-lived connection
# can be asked again after a reload), UDP answers with its name.
ECHO = r"""
import socket, sys, threading
name, tcp_port, udp_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def serve(conn):
    with conn:
        f = conn.makefile("rwb")
        for line in f:
            f.write(name.encode() + b" " + line)
            f.flush()

tcp = socket.socket(); tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind(("127.0.0.1", tcp_port)); tcp.listen(64)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind(("127.0.0.1", udp_port))

def udp_loop():
    while True:
        _, peer = udp.recvfrom(4096)
        udp.sendto(name.encode() + b"\n", peer)

threading.Thread(target=udp_loop, daemon=True).start()
print("ready", flush=True)
while True:
    c, _ = tcp.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

# A client in the namespace, driven line by line from the test: "open PORT",
# "ask TEXT" (on the open connection), "new PORT TEXT" (a fresh one), "udp PORT".
CLIENT = r"""
import socket, sys
conn = None
for cmd in sys.stdin:
    verb, _, rest = cmd.strip().partition(" ")
    try:
        if verb == "open":
            conn = socket.create_connection(("127.0.0.1", int(rest)), timeout=3)
            conn.settimeout(3); f = conn.makefile("rwb"); out = "ok"
        elif verb == "ask":
            f.write(rest.encode() + b"\n"); f.flush(); out = f.readline().decode().strip()
        elif verb == "new":
            port, text = rest.split(" ", 1)
            with socket.create_connection(("127.0.0.1", int(port)), timeout=3) as c:
                c.settimeout(3); g = c.makefile("rwb"); g.write(text.encode() + b"\n"); g.flush()
                out = g.readline().decode().strip()
        elif verb == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.settimeout(3); u.sendto(b"hi", ("127.0.0.1", int(rest)))
                out = u.recv(512).decode().strip()
    except OSError as e:
        out = f"error {type(e).__name__}"
    print(out or "error empty", flush=True)
"""


@attrs.define
class Box:
    """The test's namespace, its runtime directory and the agent in it."""

    ns: str
    run: Path
    procs: list[subprocess.Popen[str]] = attrs.field(factory=list)
    agent: subprocess.Popen[str] | None = None
    client: subprocess.Popen[str] | None = None

    @property
    def doc(self) -> Path:
        return self.run / "lb.json"

    def exec(self, *argv: str, **kw: object) -> subprocess.Popen[str]:
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns, *argv], text=True, **kw)  # type: ignore[call-overload]
        self.procs.append(proc)
        return proc

    def write(self, cfg: LbConfig) -> str:
        text = encode(cfg)
        tmp = self.run / ".lb.json.tmp"
        tmp.write_text(text)
        os.replace(tmp, self.doc)
        return digest(text)

    def start_agent(self) -> None:
        argv = [sys.executable, "-m", "cloudlet", "lb-agent", "--source", f"file:{self.doc}"]
        argv += ["--runtime-dir", str(self.run), "--interval", "0.5"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        log = open(self.run / "agent.log", "w")  # noqa: SIM115 - closed with the process
        self.agent = self.exec(*argv, stdout=log, stderr=subprocess.STDOUT, env=env)

    def report(self) -> AgentReport | None:
        try:
            return decode_report((self.run / "report.json").read_text())
        except (OSError, ValueError):
            return None

    def wait_report(self, what: str, check: Callable[[AgentReport], bool]) -> AgentReport:
        def ready() -> AgentReport | None:
            r = self.report()
            return (
                r if r is not None and self.agent and r.pid == self.agent.pid and check(r) else None
            )

        return wait_for(what, ready, log=self.run / "agent.log")

    def pid_of(self, daemon: str) -> int:
        report = self.report()
        assert report is not None
        return next(int(str(d.pid)) for d in report.daemons if d.name == daemon)

    def ask(self, line: str) -> str:
        if self.client is None:
            self.client = self.exec(
                sys.executable, "-S", "-c", CLIENT, stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
        assert self.client.stdin is not None and self.client.stdout is not None
        self.client.stdin.write(line + "\n")
        self.client.stdin.flush()
        return self.client.stdout.readline().strip()

    def pids(self) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def holds_vip(self) -> bool:
        out = subprocess.run(
            ["ip", "-n", self.ns, "-j", "addr", "show"], capture_output=True, text=True
        )
        want = VIP.split("/")[0]
        return any(
            a.get("local") == want for link in json.loads(out.stdout) for a in link["addr_info"]
        )


def wait_for(
    what: str, check: Callable[[], object], timeout: float = 20.0, log: Path | None = None
) -> object:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
            raise AssertionError(f"not within {timeout:g} s: {what}\n{tail}")
        time.sleep(0.05)
    return found


@pytest.fixture
def box() -> Iterator[Box]:
    tag = secrets.token_hex(3)
    ns, run = f"cl-test-ag{tag}", Path(f"/run/cl-test-ag{tag}")
    subprocess.run(["ip", "netns", "add", ns], check=True)
    b = Box(ns, run)
    try:
        run.mkdir()
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        subprocess.run(
            ["ip", "-n", ns, "link", "add", "va", "type", "veth", "peer", "name", "vb"], check=True
        )
        for dev, addr in (("va", "10.255.0.1/24"), ("vb", "10.255.0.2/24")):
            subprocess.run(["ip", "-n", ns, "addr", "add", addr, "dev", dev], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", dev, "up"], check=True)
        for name, tcp, udp in (("alpha", 7100, 7101), ("beta", 7200, 7201)):
            echo = b.exec(
                sys.executable, "-S", "-c", ECHO, name, str(tcp), str(udp), stdout=subprocess.PIPE
            )
            assert echo.stdout is not None and echo.stdout.readline().strip() == "ready"
        yield b
    finally:
        for proc in [*b.procs]:
            with contextlib.suppress(OSError):
                proc.kill()
        for pid in b.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in b.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(run, ignore_errors=True)


def tcp(name: str, port: int, backend_port: int, backend: str = "vm/alpha") -> Listener:
    return Listener(name, "tcp", "127.0.0.1", port, (Backend(backend, "127.0.0.1", backend_port),))


def udp(name: str, port: int, backend_port: int, bind: str = "127.0.0.1") -> Listener:
    return Listener(name, "udp", bind, port, (Backend("vm/beta", "127.0.0.1", backend_port),))


def config(box: Box, *listeners: Listener, vrrp: bool = False) -> LbConfig:
    v = Vrrp("vi_test", "va", VIP, 51, 150, (), "10.255.0.1") if vrrp else None
    return LbConfig("lb/test", tuple(listeners), v, str(box.run))


def test_a_listener_added_is_a_reload_that_keeps_connections_and_the_vip(box: Box) -> None:
    first = box.write(config(box, tcp("lb-listener/a", 8001, 7100), vrrp=True))
    box.start_agent()
    box.wait_report("the first document applied", lambda r: r.applied == first)
    wait_for("keepalived holds the VIP", box.holds_vip)
    haproxy, keepalived = box.pid_of("haproxy"), box.pid_of("keepalived")
    assert box.ask("open 8001") == "ok"
    assert box.ask("ask one") == "alpha one"

    second = box.write(
        config(
            box,
            tcp("lb-listener/a", 8001, 7100),
            tcp("lb-listener/b", 8002, 7200, "vm/beta"),
            udp("lb-listener/c", 8003, 7201),
            vrrp=True,
        )
    )
    report = box.wait_report("the second document applied", lambda r: r.applied == second)
    assert report.error is None
    assert box.ask("ask two") == "alpha two"  # the connection opened before the reload
    assert box.ask("new 8002 hello") == "beta hello"  # the new TCP listener
    assert box.ask("udp 8003") == "beta"  # nginx started for the UDP listener
    # reloaded, not restarted: the same haproxy master, the same keepalived, the VIP kept
    assert box.pid_of("haproxy") == haproxy
    assert box.pid_of("keepalived") == keepalived
    assert box.holds_vip()
    assert {d.name: d.running for d in report.daemons} == {
        "haproxy": True,
        "nginx": True,
        "keepalived": True,
    }

    third = box.write(config(box, tcp("lb-listener/a", 8001, 7100), vrrp=True))
    report = box.wait_report("the UDP listener removed", lambda r: r.applied == third)
    assert [d.name for d in report.daemons] == ["haproxy", "keepalived"]  # nginx stopped
    assert box.ask("udp 8003").startswith("error")
    assert box.ask("ask three") == "alpha three"
    assert box.pid_of("keepalived") == keepalived and box.holds_vip()


def test_a_document_that_does_not_decode_or_validate_is_reported_and_the_old_one_serves(
    box: Box,
) -> None:
    good = box.write(config(box, tcp("lb-listener/a", 8001, 7100)))
    box.start_agent()
    box.wait_report("the first document applied", lambda r: r.applied == good)
    haproxy = box.pid_of("haproxy")

    box.doc.write_text('{"version": 1, "name": "lb/test"')  # torn JSON
    broken = digest(box.doc.read_text())
    report = box.wait_report("the broken one reported", lambda r: r.latest == broken)
    assert report.applied == good and report.error is not None
    assert "does not decode" in report.error, report.error

    # decodes, but nginx -t cannot bind an address the namespace does not have
    bad = box.write(
        config(
            box,
            tcp("lb-listener/a", 8001, 7100),
            tcp("lb-listener/b", 8002, 7200),
            udp("lb-listener/c", 8003, 7201, bind="10.254.9.9"),
        )
    )
    report = box.wait_report("the invalid one reported", lambda r: r.latest == bad)
    assert report.applied == good, report
    assert report.error is not None and report.error.startswith("nginx refuses"), report.error
    assert box.ask("new 8001 still") == "alpha still"  # the old configuration serves
    assert box.ask("new 8002 no").startswith("error")  # nothing of the refused one applied
    assert box.pid_of("haproxy") == haproxy
    assert not list(box.run.glob("*.new"))


def test_a_killed_daemon_is_restarted_and_sigterm_leaves_nothing(box: Box) -> None:
    good = box.write(config(box, tcp("lb-listener/a", 8001, 7100), vrrp=True))
    box.start_agent()
    box.wait_report("applied", lambda r: r.applied == good)
    wait_for("keepalived holds the VIP", box.holds_vip)
    haproxy = box.pid_of("haproxy")
    os.kill(haproxy, signal.SIGKILL)
    box.wait_report(
        "haproxy restarted",
        lambda r: any(d.name == "haproxy" and d.running and d.pid != haproxy for d in r.daemons),
    )
    wait_for("the listener answers again", lambda: box.ask("new 8001 back") == "alpha back")

    assert box.agent is not None
    ours = {box.agent.pid, box.pid_of("haproxy"), box.pid_of("keepalived")}
    box.agent.send_signal(signal.SIGTERM)
    assert box.agent.wait(timeout=20) == 0
    left = [p for p in box.pids() if p in ours or _comm(p) in ("haproxy", "keepalived", "nginx")]
    assert left == [], left
    assert not box.holds_vip()  # keepalived let go of the VIP on its way out
    report = box.report()
    assert report is not None and report.daemons == ()  # it reports nothing running


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
