"""The gateway tests' network (issue 12): the engine in a namespace whose only link is a veth to
the host, and the rendered nginx on the host side of it. Shared by the OpenStack
(tests/integration/openstack/test_gateway_e2e.py) and vSphere (test_vsphere_gateway_e2e.py) tests.

Layout: a veth pair ``clt-gwh-*`` (host side) / ``clt-gwe-*`` (in the engine's namespace
``clt-gw-*``) with a /30 of 169.254.0.0/16; the engine's namespace has that link and its own
loopback, and no default route. nginx runs in the host's namespace, in the foreground, with the
configuration ``cloudlet export gateway`` rendered, listening on the host side of the veth.

Why no firewall is needed: what the gateway fronts binds 127.0.0.1 only (each test asserts it
for its ports). From the engine's namespace, 127.0.0.1 is the namespace's own loopback, and the
host-side veth address reaches only what listens on it or on 0.0.0.0: for those ports, nginx.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import attrs
import pytest
from conftest import cli_argv, cli_env, describe


def run(*argv: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=30, check=check
    )


@attrs.frozen
class EngineNet:
    """The engine's namespace and its one link."""

    ns: str
    host_ip: str  # the gateway's address (host side of the veth)
    engine_ip: str
    subnet: str

    def engine(
        self,
        state: Path,
        cwd: Path,
        *args: str | Path,
        env: dict[str, str] | None = None,
        timeout: float = 300.0,
    ) -> subprocess.CompletedProcess[str]:
        """``python -m cloudlet ...`` inside the engine's namespace."""
        return subprocess.run(
            ["ip", "netns", "exec", self.ns, *cli_argv(state, *args)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=cli_env(env),
            cwd=cwd,
            check=False,
        )

    def in_ns(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", self.ns, *argv, check=False)

    def refused(self, address: str, port: int) -> bool:
        """Whether a TCP connection from the namespace to ``address:port`` fails."""
        probe = (
            "import socket,sys\n"
            "s=socket.socket(); s.settimeout(3)\n"
            f"sys.exit(0 if s.connect_ex(({address!r}, {port})) != 0 else 1)\n"
        )
        return self.in_ns("python3", "-c", probe).returncode == 0


def require_tools() -> None:
    if os.geteuid() != 0:
        pytest.fail("network namespaces need root")
    missing = [t for t in ("ip", "nginx", "ss") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing {missing}: run `make dataplane-deps`")


def loopback_only(ports: Iterable[int]) -> list[str]:
    """The listening addresses on ``ports`` beyond loopback: what the namespace could reach
    on the host-side veth address without the gateway."""
    wanted = set(ports)
    wide = []
    for line in run("ss", "-Hltn").stdout.split("\n"):
        if not line.strip():
            continue
        local = line.split()[3]
        if int(local.rsplit(":", 1)[1]) in wanted and not local.startswith(
            ("127.0.0.1:", "[::1]:")
        ):
            wide.append(local)
    return wide


def _free_slash30() -> ipaddress.IPv4Network:
    """A /30 of 169.254.0.0/16 that no address or route of the host's uses."""
    used = run("ip", "-4", "-o", "addr").stdout + run("ip", "-4", "route").stdout
    while True:
        net = ipaddress.ip_network(
            f"169.254.{random.randint(100, 250)}.{4 * random.randint(1, 62)}/30"
        )
        if f"169.254.{str(net.network_address).split('.')[2]}." not in used:
            return net


@contextlib.contextmanager
def engine_net() -> Iterator[EngineNet]:
    """The namespace and its veth, torn down pass or fail."""
    require_tools()
    suffix = uuid.uuid4().hex[:6]
    ns, host_if, ns_if = f"clt-gw-{suffix}", f"clt-gwh-{suffix}", f"clt-gwe-{suffix}"
    net = _free_slash30()
    host_ip, engine_ip = (str(a) for a in net.hosts())
    try:
        run("ip", "netns", "add", ns)
        run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        run("ip", "link", "set", ns_if, "netns", ns)
        run("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
        run("ip", "link", "set", host_if, "up")
        run("ip", "-n", ns, "addr", "add", f"{engine_ip}/30", "dev", ns_if)
        run("ip", "-n", ns, "link", "set", ns_if, "up")
        run("ip", "-n", ns, "link", "set", "lo", "up")
        yield EngineNet(ns, host_ip, engine_ip, str(net))
    finally:
        run("ip", "link", "del", host_if, check=False)  # takes its peer along
        run("ip", "netns", "del", ns, check=False)


def _wait_listening(address: str, port: int, proc: subprocess.Popen[str], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"nginx exited: {log.read_text()}"
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((address, port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nginx did not listen on {address}:{port}: {log.read_text()}")


@contextlib.contextmanager
def nginx(conf: Path, log: Path, address: str, ports: Iterable[int]) -> Iterator[None]:
    """The rendered ``conf`` checked with ``nginx -t``, then run in the foreground (its log in
    ``log``) until it listens on every port; stopped, pass or fail."""
    checked = run("nginx", "-t", "-e", "stderr", "-c", conf, check=False)
    assert checked.returncode == 0, describe(checked)
    proc: subprocess.Popen[str] | None = None
    try:
        with log.open("w") as out:
            proc = subprocess.Popen(
                ["nginx", "-e", "stderr", "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        for port in ports:
            _wait_listening(address, port, proc, log)
        yield
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
