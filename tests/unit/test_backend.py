"""The local platform's VM back-end: its protocol (pure) and the real program on 127.0.0.1.

The program tests start ``python -m cloudlet.providers.local.backend`` as a
subprocess bound to 127.0.0.1, mostly on port 0 (the ready file says which ports
it got, so no test races another for a free port), and talk to it with urllib,
curl and raw sockets. They wait for what they assert (the ready file, an answer,
an exit), never for a fixed time.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cloudlet.providers.local import backend as be

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
WAIT = 15.0  # seconds any one expected event may take on a loaded 2-core machine
HTTP_GET = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


# -- the protocol, pure ------------------------------------------------------------


def test_a_complete_http_request_gets_200_with_the_id_as_first_body_line() -> None:
    out = be.answer(HTTP_GET, "vm/game", 443, final=False)
    assert out is not None
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 8\r\n" in head and b"Connection: close" in head
    assert b"X-Cloudlet-Port: 443" in head
    assert body == b"vm/game\n"


def test_an_incomplete_http_request_is_read_on_before_answering() -> None:
    for partial in (
        b"",
        b"G",
        b"GET",
        b"GET / HT",
        b"GET / HTTP/1.1\r\n",
        b"GET / HTTP/1.1\r\nA: b",
    ):
        assert be.answer(partial, "vm/game", 80, final=False) is None, partial


def test_lf_only_heads_and_http_1_0_are_http_too() -> None:
    for req in (
        b"GET / HTTP/1.1\n\n",
        b"GET /x HTTP/1.0\r\n\r\n",
        b"POST / HTTP/1.1\r\nA: b\r\n\r\n",
    ):
        out = be.answer(req, "vm/a", 80, final=False)
        assert out is not None and out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"\nvm/a\n")


def test_healthz_answers_ok_and_head_has_no_body() -> None:
    for target in (b"/healthz", b"/healthz?probe=1"):
        out = be.answer(b"GET " + target + b" HTTP/1.1\r\n\r\n", "vm/game", 80, final=False)
        assert out is not None and out.endswith(b"\r\n\r\nok\n")
    head = be.answer(b"HEAD / HTTP/1.1\r\n\r\n", "vm/game", 80, final=False)
    assert head is not None and head.endswith(b"\r\n\r\n") and b"Content-Length: 8" in head


def test_anything_else_gets_the_line_once_a_line_or_non_http_bytes_arrived() -> None:
    line = b"vm/game\n"
    assert be.answer(b"hello\n", "vm/game", 80, final=False) == line
    assert be.answer(b"\x16\x03\x01\x02", "vm/game", 80, final=False) == line  # a TLS hello
    assert be.answer(b"get / http/1.1\r\n", "vm/game", 80, final=False) == line
    assert be.answer(b"PING", "vm/game", 80, final=False) is None  # could still become HTTP
    assert be.answer(b"PING", "vm/game", 80, final=True) == line
    assert be.answer(b"", "vm/game", 80, final=True) == line  # silent, then timed out / EOF


def test_a_request_line_cut_short_by_the_timeout_still_gets_http() -> None:
    out = be.answer(b"GET / HTTP/1.1\r\nHost: t\r\n", "vm/game", 80, final=True)
    assert out is not None and out.startswith(b"HTTP/1.1 200 OK")


def test_the_command_line() -> None:
    o = be.parse_args(
        [
            *("--id", "vm/game", "--tcp", "443", "--tcp=8443", "--udp", "53", "--bind", "10.0.0.5"),
            *("--ready-file", "/tmp/r", "--idle-timeout", "0.5", "--mark", "cloudlet=x=y"),
        ]
    )
    assert (o.id, o.tcp, o.udp, o.bind) == ("vm/game", [443, 8443], [53], "10.0.0.5")
    assert (o.ready_file, o.idle_timeout, o.mark) == ("/tmp/r", 0.5, ["cloudlet=x=y"])
    d = be.parse_args(["--id", "vm/a"])
    assert (d.tcp, d.udp, d.bind, d.ready_file, d.idle_timeout) == ([], [], "0.0.0.0", None, 1.0)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--tcp", "80"],
        ["--id", "vm/a", "--tcp", "70000"],
        ["--id", "vm/a", "--tcp", "-1"],
        ["--id", "vm/a", "--tcp"],
        ["--id", "vm/a", "--mark", "novalue"],
        ["--id", "vm/a", "--mark", "=x"],
        ["--id", "vm/a", "--idle-timeout", "0"],
        ["--id", "vm/a", "--id", "vm/b"],
        ["--id", "vm/a\nx"],
        ["--id", "vm/a", "--frobnicate"],
    ],
)
def test_a_bad_command_line_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(be.UsageError):
        be.parse_args(argv)
    assert be.main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_the_ready_line_is_json_even_for_odd_ids() -> None:
    doc = json.loads(be.ready_line('vm/"a\\b', "::", [1, 2], []))
    assert doc == {"pid": os.getpid(), "id": 'vm/"a\\b', "bind": "::", "tcp": [1, 2], "udp": []}


# -- the program -------------------------------------------------------------------


class Running:
    def __init__(self, proc: subprocess.Popen[bytes], ready: Path) -> None:
        self.proc = proc
        self.ready = ready
        self.doc = json.loads(ready.read_text())
        self.tcp: list[int] = self.doc["tcp"]
        self.udp: list[int] = self.doc["udp"]


Launch = Callable[..., Running]


def _start(tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "cloudlet.providers.local.backend", "--bind", "127.0.0.1"]
    return subprocess.Popen(
        [*cmd, "--ready-file", str(tmp_path / "ready"), *args],
        env=ENV,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_ready(proc: subprocess.Popen[bytes], ready: Path) -> Running:
    deadline = time.monotonic() + WAIT
    while not ready.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no ready file"
        time.sleep(0.005)
    return Running(proc, ready)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    started: list[subprocess.Popen[bytes]] = []

    def run(*args: str) -> Running:
        proc = _start(tmp_path, *args)
        started.append(proc)
        return _wait_ready(proc, tmp_path / "ready")

    yield run
    for proc in started:
        _stop(proc)


def _recv_all(sock: socket.socket) -> bytes:
    sock.settimeout(WAIT)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _raw(port: int, payload: bytes, half_close: bool = False) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        s.sendall(payload)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        return _recv_all(s)


def test_urllib_get_answers_the_id_50_times_in_a_row(launch: Launch) -> None:
    vm = launch("--id", "vm/game", "--tcp", "0", "--tcp", "0")
    for i in range(50):
        port = vm.tcp[i % 2]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=WAIT) as r:
            assert r.status == 200
            assert r.headers["X-Cloudlet-Port"] == str(port)
            assert r.read().decode().splitlines()[0] == "vm/game"


def test_curl_answers_the_id_50_times_in_a_row(launch: Launch) -> None:
    vm = launch("--id", "vm/game", "--tcp", "0")
    url = f"http://127.0.0.1:{vm.tcp[0]}/"
    failures = []
    for _ in range(50):
        r = subprocess.run(
            ["curl", "-sS", "--max-time", str(WAIT), "-w", "%{http_code}", url],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0 or r.stdout.splitlines() != ["vm/game", "200"]:
            failures.append((r.returncode, r.stdout, r.stderr))
    assert failures == []


def test_healthz_and_head(launch: Launch) -> None:
    vm = launch("--id", "vm/game", "--tcp", "0")
    with urllib.request.urlopen(f"http://127.0.0.1:{vm.tcp[0]}/healthz", timeout=WAIT) as r:
        assert (r.status, r.read()) == (200, b"ok\n")
    req = urllib.request.Request(f"http://127.0.0.1:{vm.tcp[0]}/", method="HEAD")
    with urllib.request.urlopen(req, timeout=WAIT) as r:
        assert (r.status, r.headers["Content-Length"], r.read()) == (200, "8", b"")


def test_a_request_body_is_drained_not_reset(launch: Launch) -> None:
    """The answer goes out after the head; the body still arriving must not cause a reset."""
    vm = launch("--id", "vm/game", "--tcp", "0")
    body = b"x" * 8_000_000  # more than the socket buffers hold before the answer
    for _ in range(3):
        req = urllib.request.Request(f"http://127.0.0.1:{vm.tcp[0]}/up", data=body)
        with urllib.request.urlopen(req, timeout=WAIT) as r:
            assert (r.status, r.read()) == (200, b"vm/game\n")


def test_a_raw_tcp_client_gets_the_line(launch: Launch) -> None:
    vm = launch("--id", "vm/game", "--tcp", "0", "--idle-timeout", "0.2")
    assert _raw(vm.tcp[0], b"hello\n") == b"vm/game\n"
    assert _raw(vm.tcp[0], b"\x16\x03\x01\x00\x05hello") == b"vm/game\n"
    assert _raw(vm.tcp[0], b"", half_close=True) == b"vm/game\n"
    assert _raw(vm.tcp[0], b"PING") == b"vm/game\n"  # after the idle timeout
    assert _raw(vm.tcp[0], b"") == b"vm/game\n"  # silent: after the idle timeout


def test_every_udp_datagram_gets_the_line(launch: Launch) -> None:
    vm = launch("--id", "vm/dns", "--udp", "0", "--udp", "0", "--tcp", "0")
    for port in vm.udp:
        for payload in (b"x", b"\x00" * 1200, b"query\n"):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(WAIT)
                for _ in range(3):
                    s.sendto(payload, ("127.0.0.1", port))
                    assert s.recvfrom(65535) == (b"vm/dns\n", ("127.0.0.1", port))
    assert _raw(vm.tcp[0], b"hi\n") == b"vm/dns\n"


def test_the_ready_file_names_the_process_and_its_bound_ports(launch: Launch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        chosen = probe.getsockname()[1]
    vm = launch("--id", "vm/game", "--tcp", str(chosen), "--tcp", "0", "--udp", "0")
    assert vm.doc["pid"] == vm.proc.pid and vm.doc["id"] == "vm/game"
    assert vm.tcp[0] == chosen and len(vm.tcp) == 2 and len(vm.udp) == 1
    for port in vm.tcp:  # bound and listening the moment the file exists: no retry
        socket.create_connection(("127.0.0.1", port), timeout=WAIT).close()


@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_DGRAM])
def test_no_ready_file_when_a_port_cannot_be_bound(tmp_path: Path, kind: int) -> None:
    ready = tmp_path / "ready"
    ready.write_text("stale from a previous run\n")
    with socket.socket(socket.AF_INET, kind) as taken:
        taken.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            taken.listen()
        flag = "--tcp" if kind == socket.SOCK_STREAM else "--udp"
        proc = _start(tmp_path, "--id", "vm/game", "--tcp", "0", flag, str(taken.getsockname()[1]))
        _out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 1
    assert b"cannot bind" in err
    assert not ready.exists()


def test_sigterm_exits_0_and_removes_the_ready_file(launch: Launch) -> None:
    vm = launch("--id", "vm/game", "--tcp", "0", "--udp", "0", "--idle-timeout", "60")
    with socket.create_connection(("127.0.0.1", vm.tcp[0]), timeout=WAIT):  # a silent client
        vm.proc.send_signal(signal.SIGTERM)
        vm.proc.communicate(timeout=WAIT)
    assert vm.proc.returncode == 0
    assert not vm.ready.exists()


def test_without_site_and_without_ports_it_idles_until_sigterm(tmp_path: Path) -> None:
    """The recommended ``python -S`` start works; a VM exposing nothing still gets a process."""
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-S",
            "-m",
            "cloudlet.providers.local.backend",
            "--id",
            "vm/quiet",
            "--ready-file",
            str(ready),
        ],
        env=ENV,
        cwd=tmp_path,
    )
    try:
        vm = _wait_ready(proc, ready)
        assert (vm.tcp, vm.udp) == ([], [])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=WAIT) == 0
    finally:
        _stop(proc)


def test_a_silent_client_does_not_block_the_others(launch: Launch) -> None:
    vm = launch("--id", "vm/game", "--tcp", "0", "--idle-timeout", "3")
    silent = [socket.create_connection(("127.0.0.1", vm.tcp[0]), timeout=WAIT) for _ in range(20)]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{vm.tcp[0]}/", timeout=WAIT) as r:
            assert r.read() == b"vm/game\n"
        assert _raw(vm.tcp[0], b"hello\n") == b"vm/game\n"
        readable, _, _ = select.select(silent, [], [], 0)
        assert readable == []  # they are still waiting for their idle timeout
        assert all(_recv_all(s) == b"vm/game\n" for s in silent)  # and then get the line
    finally:
        for s in silent:
            s.close()


def test_many_concurrent_connections(launch: Launch) -> None:
    vm = launch("--id", "vm/game", "--tcp", "0")
    socks = [socket.create_connection(("127.0.0.1", vm.tcp[0]), timeout=WAIT) for _ in range(300)]
    try:
        for s in socks:
            s.sendall(HTTP_GET)
        bodies = {_recv_all(s).partition(b"\r\n\r\n")[2] for s in socks}
        assert bodies == {b"vm/game\n"}
    finally:
        for s in socks:
            s.close()


def test_marks_are_ignored_but_visible_in_the_cmdline(launch: Launch) -> None:
    vm = launch("--id", "vm/game", "--tcp", "0", "--mark", "cloudlet=berlin-1", "--mark", "uid=u1")
    cmdline = Path(f"/proc/{vm.proc.pid}/cmdline").read_bytes().split(b"\0")
    assert b"cloudlet=berlin-1" in cmdline and b"uid=u1" in cmdline
    assert _raw(vm.tcp[0], b"hi\n") == b"vm/game\n"


def test_ipv6_bind(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "cloudlet.providers.local.backend", "--id", "vm/v6"),
            *("--bind", "::1", "--tcp", "0", "--ready-file", str(tmp_path / "ready")),
        ],
        env=ENV,
        cwd=tmp_path,
    )
    try:
        vm = _wait_ready(proc, tmp_path / "ready")
        with socket.create_connection(("::1", vm.tcp[0]), timeout=WAIT) as s:
            s.sendall(b"hi\n")
            assert _recv_all(s) == b"vm/v6\n"
    finally:
        _stop(proc)


# -- what importing it costs -------------------------------------------------------

HEAVY = {"cattrs", "attrs", "attr", "networkx", "rich", "openstack", "yaml", "pyVmomi", "argparse"}
ALLOWED_CLOUDLET = {
    "cloudlet",
    "cloudlet.providers",
    "cloudlet.providers.local",
    "cloudlet.providers.local.backend",
}


def test_importing_the_backend_loads_nothing_heavy_and_no_other_cloudlet_module() -> None:
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import cloudlet.providers.local.backend"],
        env=ENV,
        capture_output=True,
        text=True,
        check=True,
    )
    names = {
        line.rsplit("|", 1)[1].strip()
        for line in r.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "cloudlet.providers.local.backend" in names
    assert {n for n in names if n.split(".")[0] == "cloudlet"} == ALLOWED_CLOUDLET
    assert {n.split(".")[0] for n in names} & HEAVY == set()
