"""The rendered LB configurations, checked by the real daemons and carrying real packets.

Every test works inside a network namespace it makes itself (``cl-test-<random>``)
and deletes, with every process it started, even when it fails: no host
interface, address or route is touched, and all traffic stays inside the
test's namespace. Needs root and `make dataplane-deps` (haproxy, nginx with its
stream module, keepalived, iproute2, curl).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from cloudlet.lb import (
    NGINX_STREAM_MODULE,
    Backend,
    LbConfig,
    Listener,
    Vrrp,
    haproxy_argv,
    haproxy_check_argv,
    haproxy_config,
    keepalived_argv,
    keepalived_check_argv,
    keepalived_config,
    nginx_argv,
    nginx_check_argv,
    nginx_stream_config,
    runtime_paths,
)

pytestmark = pytest.mark.integration

NEEDED = ("ip", "haproxy", "nginx", "keepalived", "curl")

# A back-end like the `local` platform's: reads the request before answering (an
# answer sent first breaks curl about one time in four), and says who it is.
RESPONDER = r"""
import socket, sys, threading
ident, tcp_port, udp_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
body = (ident + "\n").encode()

def serve_tcp(conn):
    with conn:
        data = b""
        while b"\r\n\r\n" not in data and b"\n\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                     % len(body) + body)

tcp = socket.socket(); tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind(("127.0.0.1", tcp_port)); tcp.listen(64)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind(("127.0.0.1", udp_port))

def udp_loop():
    while True:
        _, peer = udp.recvfrom(4096)
        udp.sendto(body, peer)

threading.Thread(target=udp_loop, daemon=True).start()
print("ready", flush=True)
while True:
    c, _ = tcp.accept()
    threading.Thread(target=serve_tcp, args=(c,), daemon=True).start()
"""

UDP_CLIENT = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1.0)
s.sendto(b"hello\n", (sys.argv[1], int(sys.argv[2])))
try:
    print(s.recv(4096).decode(), end="")
except socket.timeout:
    sys.exit(3)
"""

# Opens a connection, says so, waits for a file to appear, then sends its request on it.
HELD_CLIENT = r"""
import os, socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
print("connected", flush=True)
while not os.path.exists(sys.argv[3]):
    time.sleep(0.05)
s.sendall(b"GET / HTTP/1.0\r\n\r\n")
data = b""
while chunk := s.recv(4096):
    data += chunk
print(data.decode().split("\r\n\r\n", 1)[1], end="", flush=True)
"""


def _require_tools() -> None:
    if os.geteuid() != 0:
        pytest.fail("network namespaces need root")
    missing = [t for t in NEEDED if shutil.which(t) is None]
    if missing or not Path(NGINX_STREAM_MODULE).exists():
        pytest.fail(f"missing {missing or NGINX_STREAM_MODULE}: run `make dataplane-deps`")


def _run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=check)


class Netns:
    """One namespace this test made, and the processes it started inside it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.procs: list[subprocess.Popen[str]] = []

    def argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], check: bool = False) -> subprocess.CompletedProcess[str]:
        return _run(self.argv(argv), check=check)

    def start(self, argv: Sequence[str], log: Path) -> subprocess.Popen[str]:
        """A process in the foreground inside the namespace, in a process group of its own."""
        out = log.open("w")
        p = subprocess.Popen(
            self.argv(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        out.close()
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
            # the group's other members (workers, keepalived's VRRP child) go with it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)


def _namespaces() -> set[str]:
    return {ln.split()[0] for ln in _run(["ip", "netns", "list"]).stdout.splitlines() if ln}


@contextlib.contextmanager
def netns() -> Iterator[Netns]:
    _require_tools()
    ns = Netns(f"cl-test-{secrets.token_hex(4)}")
    _run(["ip", "netns", "add", ns.name])
    try:
        _run(["ip", "-n", ns.name, "link", "set", "lo", "up"])
        # what the provider sets on an LB: bind a VIP this namespace does not hold (yet)
        ns.run(["sysctl", "-qw", "net.ipv4.ip_nonlocal_bind=1"], check=True)
        if Path("/proc/sys/net/ipv6").exists():
            ns.run(["sysctl", "-qw", "net.ipv6.ip_nonlocal_bind=1"], check=True)
        yield ns
    finally:
        ns.stop_all()
        _run(["ip", "netns", "del", ns.name], check=False)


def _veth(ns: Netns, dev: str, addr: str, peer: str, peer_addr: str) -> None:
    """A veth pair with both ends inside the namespace: an interface for keepalived."""
    _run(["ip", "-n", ns.name, "link", "add", dev, "type", "veth", "peer", "name", peer])
    for d, a in ((dev, addr), (peer, peer_addr)):
        _run(["ip", "-n", ns.name, "addr", "add", a, "dev", d])
        _run(["ip", "-n", ns.name, "link", "set", d, "up"])


@pytest.fixture
def runtime_dir() -> Iterator[Path]:
    # short, fixed-alphabet path: pytest's tmp_path can hold brackets and be long for sun_path
    d = Path(tempfile.mkdtemp(prefix="cl-lb-", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _write(rt: Path, cfg: LbConfig) -> None:
    p = runtime_paths(cfg)
    Path(p.haproxy_cfg).write_text(haproxy_config(cfg))
    Path(p.nginx_conf).write_text(nginx_stream_config(cfg))
    Path(p.keepalived_conf).write_text(keepalived_config(cfg))


def _validate(ns: Netns, cfg: LbConfig) -> dict[str, subprocess.CompletedProcess[str]]:
    """Each daemon's own check on its rendered file; nginx -t binds its addresses, so in the ns."""
    p = runtime_paths(cfg)
    return {
        "haproxy": ns.run(haproxy_check_argv(p.haproxy_cfg)),
        "nginx": ns.run(nginx_check_argv(cfg)),
        "keepalived": ns.run(keepalived_check_argv(p.keepalived_conf)),
    }


def _assert_valid(results: dict[str, subprocess.CompletedProcess[str]]) -> None:
    bad = {k: (r.returncode, r.stdout + r.stderr) for k, r in results.items() if r.returncode}
    assert not bad, bad


FULL = (
    Listener(
        "lb-listener/web",
        "tcp",
        "198.18.0.5",
        443,
        (Backend("vm/a", "10.0.0.5", 443), Backend("vm/b", "10.0.0.6", 8443)),
    ),
    Listener("lb-listener/v6", "tcp", "fd00::5", 443, (Backend("vm/a", "fd00::10", 443),)),
    Listener(
        "lb-listener/game",
        "udp",
        "198.18.0.5",
        7777,
        (Backend("vm/g", "10.0.0.7", 7000), Backend("vm/h", "10.0.0.8", 7000)),
    ),
    Listener(
        "lb-listener/same-port", "udp", "198.18.0.5", 443, (Backend("vm/a", "10.0.0.5", 443),)
    ),
    Listener("lb-listener/empty", "tcp", "198.18.0.5", 80, ()),
)
VRRP = Vrrp("vi_root", "eth0", "198.18.0.5/24", 51, 150, ("198.18.0.3", "198.18.0.4"), "198.18.0.2")


def test_rendered_configs_pass_each_daemons_own_check(runtime_dir):
    cfg = LbConfig("lb/root", FULL, VRRP, str(runtime_dir))
    with netns() as ns:
        _veth(ns, "eth0", "198.18.0.2/24", "eth0p", "198.18.0.3/24")
        _write(runtime_dir, cfg)
        _assert_valid(_validate(ns, cfg))
        # keepalived checks the interface in the namespace it runs in: without it, refused
        _run(["ip", "-n", ns.name, "link", "del", "eth0"])
        assert ns.run(keepalived_check_argv(runtime_paths(cfg).keepalived_conf)).returncode != 0


def test_configs_without_tcp_udp_or_vrrp_still_validate(runtime_dir):
    for listeners, vrrp in (((), None), (FULL[2:3], None), (FULL[:1], None), ((), VRRP)):
        cfg = LbConfig("lb/bare", listeners, vrrp, str(runtime_dir))
        with netns() as ns:
            _veth(ns, "eth0", "198.18.0.2/24", "eth0p", "198.18.0.3/24")
            _write(runtime_dir, cfg)
            _assert_valid(_validate(ns, cfg))


def test_the_checks_do_refuse_a_broken_config(runtime_dir):
    """The validation above means something: each check rejects a plausible mistake."""
    cfg = LbConfig("lb/root", FULL, VRRP, str(runtime_dir))
    p = runtime_paths(cfg)
    with netns() as ns:
        _veth(ns, "eth0", "198.18.0.2/24", "eth0p", "198.18.0.3/24")
        _write(runtime_dir, cfg)
        _assert_valid(_validate(ns, cfg))
        # haproxy 2.6 has no UDP: a dgram bind is refused
        Path(p.haproxy_cfg).write_text(
            haproxy_config(cfg).replace("bind 198.18.0.5:443", "bind udp@198.18.0.5:443")
        )
        # nginx: an upstream without servers
        Path(p.nginx_conf).write_text(
            nginx_stream_config(cfg)
            .replace("server 10.0.0.7:7000 max_fails=1 fail_timeout=2s;", "")
            .replace("server 10.0.0.8:7000 max_fails=1 fail_timeout=2s;", "")
        )
        # keepalived: a VRID out of range
        Path(p.keepalived_conf).write_text(
            keepalived_config(cfg).replace("virtual_router_id 51", "virtual_router_id 300")
        )
        results = _validate(ns, cfg)
        assert {k: r.returncode != 0 for k, r in results.items()} == {
            "haproxy": True,
            "nginx": True,
            "keepalived": True,
        }, {k: r.stdout + r.stderr for k, r in results.items()}
        # and a missing file is an error too (keepalived -t alone exits 0 on one)
        assert ns.run(keepalived_check_argv(str(runtime_dir / "absent.conf"))).returncode != 0


# -- real traffic ----------------------------------------------------------------------------------


def _wait_for_line(
    path: Path, text: str, proc: subprocess.Popen[str], timeout: float, count: int = 1
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.read_text().count(text) >= count:
            return
        assert proc.poll() is None, path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} never said {text!r}: {path.read_text()}")


def _curl(ns: Netns, host: str, port: int) -> str:
    r = ns.run(["curl", "-s", "--max-time", "2", f"http://{host}:{port}/"])
    return r.stdout if r.returncode == 0 else f"<curl exit {r.returncode}>"


def _udp(ns: Netns, host: str, port: int) -> str:
    r = ns.run([sys.executable, "-c", UDP_CLIENT, host, str(port)])
    return r.stdout if r.returncode == 0 else f"<udp exit {r.returncode}>"


def _answers_until(ask, want: set[str], timeout: float = 15.0) -> set[str]:
    """Ask until every one of ``want`` has answered (round robin over healthy back-ends)."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not want <= seen:
        seen.add(ask().strip())
        time.sleep(0.05)
    return seen


def _start_lb(ns: Netns, rt: Path, cfg: LbConfig) -> tuple[subprocess.Popen[str], ...]:
    _write(rt, cfg)
    _assert_valid(_validate(ns, cfg))
    haproxy = ns.start(haproxy_argv(cfg), rt / "haproxy.log")
    nginx = ns.start(nginx_argv(cfg), rt / "nginx.log")
    _wait_for_line(rt / "haproxy.log", "Loading success", haproxy, 10)
    return haproxy, nginx


def test_tcp_and_udp_reach_the_backends_through_haproxy_and_nginx(runtime_dir):
    rt = runtime_dir
    backends = {"vm/a": (18081, 18053), "vm/b": (18082, 18054)}
    tcp = tuple(Backend(i, "127.0.0.1", t) for i, (t, _) in backends.items())
    udp = tuple(Backend(i, "127.0.0.1", u) for i, (_, u) in backends.items())
    cfg = LbConfig(
        "lb/traffic",
        (
            Listener("web", "tcp", "127.0.0.1", 8443, tcp),
            Listener("game", "udp", "127.0.0.1", 7777, udp),
            # a VIP-like address the namespace does not hold when haproxy starts
            Listener("vip-web", "tcp", "10.250.0.1", 443, tcp[:1]),
        ),
        None,
        str(rt),
    )
    with netns() as ns:
        for ident, (t, u) in backends.items():
            log = rt / f"responder-{t}.log"
            p = ns.start([sys.executable, "-c", RESPONDER, ident, str(t), str(u)], log)
            _wait_for_line(log, "ready", p, 10)
        haproxy, nginx = _start_lb(ns, rt, cfg)
        want = set(backends)
        assert _answers_until(lambda: _curl(ns, "127.0.0.1", 8443), want) == want
        assert _answers_until(lambda: _udp(ns, "127.0.0.1", 7777), want) == want

        # the VIP arrives after haproxy bound it (ip_nonlocal_bind): it answers at once
        _run(["ip", "-n", ns.name, "addr", "add", "10.250.0.1/32", "dev", "lo"])
        assert _answers_until(lambda: _curl(ns, "10.250.0.1", 443), {"vm/a"}) == {"vm/a"}

        # nothing is listening where no listener was rendered
        assert _curl(ns, "127.0.0.1", 8444).startswith("<curl exit 7")

        # the daemons wrote their pid files where the renderer said
        p = runtime_paths(cfg)
        assert int(Path(p.haproxy_pid).read_text().split()[0]) == haproxy.pid
        assert int(Path(p.nginx_pid).read_text()) == nginx.pid
        pids = [pr.pid for pr in ns.procs]
        name = ns.name
    # cleanup left nothing: the namespace is gone and every process with it
    assert name not in _namespaces()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), pid


def test_haproxy_reload_keeps_an_established_connection(runtime_dir):
    """Why -W: SIGUSR2 to the master starts a new worker; a connection already open still gets
    its answer from the old one, and new connections reach the new configuration."""
    rt = runtime_dir
    with netns() as ns:
        log = rt / "responder.log"
        p = ns.start([sys.executable, "-c", RESPONDER, "vm/a", "18081", "18053"], log)
        _wait_for_line(log, "ready", p, 10)
        backend = (Backend("vm/a", "127.0.0.1", 18081),)
        cfg = LbConfig(
            "lb/reload", (Listener("web", "tcp", "127.0.0.1", 8443, backend),), None, str(rt)
        )
        haproxy, _ = _start_lb(ns, rt, cfg)
        assert _answers_until(lambda: _curl(ns, "127.0.0.1", 8443), {"vm/a"}) == {"vm/a"}

        # a client inside the namespace opens a connection, waits for the reload, then asks
        argv = [sys.executable, "-c", HELD_CLIENT, "127.0.0.1", "8443", str(rt / "go")]
        client = ns.start(argv, rt / "client.log")
        _wait_for_line(rt / "client.log", "connected", client, 10)

        more = Listener("web2", "tcp", "127.0.0.1", 8444, backend)
        cfg2 = LbConfig("lb/reload", (*cfg.listeners, more), None, str(rt))
        _write(rt, cfg2)
        _assert_valid(_validate(ns, cfg2))
        os.kill(haproxy.pid, signal.SIGUSR2)
        _wait_for_line(rt / "haproxy.log", "Loading success", haproxy, 10, count=2)
        assert _answers_until(lambda: _curl(ns, "127.0.0.1", 8444), {"vm/a"}) == {"vm/a"}

        (rt / "go").touch()
        assert client.wait(timeout=10) == 0, rt.joinpath("client.log").read_text()
        assert rt.joinpath("client.log").read_text() == "connected\nvm/a\n"
        assert haproxy.poll() is None


def test_keepalived_runs_in_the_foreground_and_holds_the_vip(runtime_dir):
    """keepalived with the rendered config and argv takes the VIP on a veth inside the namespace
    (no peer answers, so it becomes master) and gives it back when stopped."""
    rt = runtime_dir
    with netns() as ns:
        _veth(ns, "v0", "10.251.0.2/24", "v1", "10.251.0.3/24")
        vrrp = Vrrp("vi_test", "v0", "10.251.0.100/24", 77, 100, ("10.251.0.3",), "10.251.0.2")
        cfg = LbConfig("lb/vip", (), vrrp, str(rt))
        _write(rt, cfg)
        _assert_valid(_validate(ns, cfg))
        ka = ns.start(keepalived_argv(cfg), rt / "keepalived.log")

        def holds_vip() -> bool:
            out = _run(["ip", "-n", ns.name, "-4", "addr", "show", "dev", "v0"]).stdout
            return "10.251.0.100/24" in out

        deadline = time.monotonic() + 10
        while not holds_vip():
            assert ka.poll() is None, rt.joinpath("keepalived.log").read_text()
            assert time.monotonic() < deadline, rt.joinpath("keepalived.log").read_text()
            time.sleep(0.05)
        assert "Entering MASTER STATE" in rt.joinpath("keepalived.log").read_text()
        p = runtime_paths(cfg)
        assert int(Path(p.keepalived_pid).read_text()) == ka.pid
        assert Path(p.vrrp_pid).exists()

        os.kill(ka.pid, signal.SIGTERM)
        assert ka.wait(timeout=10) == 0
        assert not holds_vip()
        # keepalived removes its pid files on a clean stop
        assert not Path(p.keepalived_pid).exists()
