"""The gateway for real (issue 12): the engine in a network namespace whose only way out is
the rendered nginx, in front of the OpenStack test cloud.

Layout: a veth pair ``clt-gwh-*`` (host side) / ``clt-gwe-*`` (in the engine's namespace
``clt-gw-*``) with a /30 of 169.254.0.0/16; the engine's namespace has that link and its
own loopback, and no default route. nginx runs in the host's namespace, in the foreground,
with the configuration ``cloudlet export gateway`` rendered: it listens on the host side of
the veth, one port per endpoint (the same port numbers as the cloud's), and proxies to the
cloud on 127.0.0.1.

Why no firewall is needed: the test cloud binds every API and its database and broker on
127.0.0.1 only (``ss -ltn``; the test asserts it first). So from the engine's namespace,
127.0.0.1 is the namespace's own loopback, and the host-side veth address reaches only what
listens on it or on 0.0.0.0, which for the cloud's ports is nginx alone. Were a service
bound to 0.0.0.0, nginx could not take its port on the veth address, and the namespace
would need an nft rule that drops everything to the host but the gateway's ports (or the
gateway would listen on other ports, ``gateway.ports``); the precondition says so.

What it shows: ``nginx -t`` accepts the rendered file; a sync run in the namespace with the
gateway converges (objects checked from outside, straight at the cloud), nginx logged the
engine's calls to keystone, nova, neutron and glance, a plan through it is empty, destroy
through it removes everything; the same spec without the gateway cannot even authenticate
from the namespace, and every cloud port is refused directly (loopback and veth address).
"""

from __future__ import annotations

import ipaddress
import os
import random
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from conftest import cli_argv, cli_env, describe, ok
from osconsole import Console, cloud_config

#: The cloud's ports (cloud.sh, OSCI_PORT_OFFSET 0): APIs, then MariaDB, AMQP, epmd.
FORWARDED = {"identity": 5000, "compute": 8774, "network": 9696, "image": 9292}
NOT_FORWARDED = {"placement": 8778, "orchestration": 8004, "mariadb": 3306, "amqp": 5672}
TIMEOUT = 300.0

SPEC = """\
apiVersion: cloudlet/v1
kind: Cloudlet
metadata: {{name: {name}}}
spec:
  platform:
    type: openstack
    cloud: osci-demo
    externalNetwork: public
{gateway}  dataPath: no-router
  defaults: {{image: ubuntu-22.04, flavor: m1.small}}
  networks:
    - {{name: internal, cidr: 10.62.0.0/24}}
  vms:
    - {{name: app, network: internal}}
"""
GATEWAY = """\
    gateway:
      address: {address}
      endpoints:
        identity: http://127.0.0.1:5000/v3
        compute: http://127.0.0.1:8774/v2.1
        network: http://127.0.0.1:9696
        image: http://127.0.0.1:9292
      clients: [{clients}]
"""


def run(*argv: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=30, check=check
    )


@attrs.frozen
class Site:
    ns: str
    host_ip: str  # the gateway's address (host side of the veth)
    engine_ip: str
    subnet: str
    nginx_log: Path
    state: Path
    tmp: Path

    def engine(
        self, *args: str | Path, timeout: float = TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """``python -m cloudlet ...`` inside the engine's namespace."""
        return subprocess.run(
            ["ip", "netns", "exec", self.ns, *cli_argv(self.state, *args)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=cli_env(),
            cwd=self.tmp,
            check=False,
        )

    def spec(self, name: str, gateway: bool = True) -> Path:
        gw = GATEWAY.format(address=self.host_ip, clients=self.subnet) if gateway else ""
        path = self.tmp / f"{name}-{'gw' if gateway else 'direct'}.yaml"
        path.write_text(SPEC.format(name=name, gateway=gw))
        return path


def _require_tools() -> None:
    if os.geteuid() != 0:
        pytest.fail("network namespaces need root")
    missing = [t for t in ("ip", "nginx", "ss") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing {missing}: run `make dataplane-deps`")


def _cloud_binds_loopback_only() -> None:
    listening = run("ss", "-Hltn").stdout.split("\n")
    ports = {*FORWARDED.values(), *NOT_FORWARDED.values()}
    wide = [
        line.split()[3]
        for line in listening
        if line.strip()
        and int(line.split()[3].rsplit(":", 1)[1]) in ports
        and not line.split()[3].startswith(("127.0.0.1:", "[::1]:"))
    ]
    assert not wide, (
        f"the cloud listens beyond loopback ({wide}): the host-side veth address would reach it "
        "directly; this layout then needs nft rules in the engine's namespace (see docstring)"
    )


def _free_slash30() -> ipaddress.IPv4Network:
    """A /30 of 169.254.0.0/16 that no address or route of the host's uses."""
    used = run("ip", "-4", "-o", "addr").stdout + run("ip", "-4", "route").stdout
    while True:
        net = ipaddress.ip_network(
            f"169.254.{random.randint(100, 250)}.{4 * random.randint(1, 62)}/30"
        )
        if f"169.254.{str(net.network_address).split('.')[2]}." not in used:
            return net


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


@pytest.fixture(scope="module")
def console() -> Iterator[Console]:
    cloud_config()
    c = Console()
    yield c
    c.close()


@pytest.fixture
def site(tmp_path: Path, console: Console) -> Iterator[Site]:
    """Namespace, veth, the rendered nginx running; all torn down, pass or fail."""
    _require_tools()
    _cloud_binds_loopback_only()
    suffix = uuid.uuid4().hex[:6]
    ns, host_if, ns_if = f"clt-gw-{suffix}", f"clt-gwh-{suffix}", f"clt-gwe-{suffix}"
    net = _free_slash30()
    host_ip, engine_ip = (str(a) for a in net.hosts())
    nginx: subprocess.Popen[str] | None = None
    try:
        run("ip", "netns", "add", ns)
        run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        run("ip", "link", "set", ns_if, "netns", ns)
        run("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
        run("ip", "link", "set", host_if, "up")
        run("ip", "-n", ns, "addr", "add", f"{engine_ip}/30", "dev", ns_if)
        run("ip", "-n", ns, "link", "set", ns_if, "up")
        run("ip", "-n", ns, "link", "set", "lo", "up")
        site = Site(
            ns, host_ip, engine_ip, str(net), tmp_path / "nginx.log", tmp_path / "state", tmp_path
        )
        rundir, conf = tmp_path / "run", tmp_path / "nginx.conf"
        rundir.mkdir()
        ok(site.engine("export", "gateway", site.spec("render"), "-o", conf, "--run-dir", rundir))
        checked = run("nginx", "-t", "-e", "stderr", "-c", conf, check=False)
        assert checked.returncode == 0, describe(checked)
        with site.nginx_log.open("w") as log:
            nginx = subprocess.Popen(
                ["nginx", "-e", "stderr", "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        for port in FORWARDED.values():
            _wait_listening(host_ip, port, nginx, site.nginx_log)
        yield site
    finally:
        if nginx is not None:
            nginx.terminate()
            try:
                nginx.wait(10)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait()
        run("ip", "link", "del", host_if, check=False)  # takes its peer along
        run("ip", "netns", "del", ns, check=False)


def _refused_from(site: Site, address: str, port: int) -> bool:
    probe = (
        "import socket,sys\n"
        "s=socket.socket(); s.settimeout(3)\n"
        f"sys.exit(0 if s.connect_ex(({address!r}, {port})) != 0 else 1)\n"
    )
    done = run("ip", "netns", "exec", site.ns, "python3", "-c", probe, check=False)
    return done.returncode == 0


def test_the_engine_converges_through_the_gateway_and_cannot_go_around_it(
    site: Site, console: Console
) -> None:
    name = f"gw-{uuid.uuid4().hex[:8]}"
    try:
        # the namespace reaches the cloud through the gateway only
        for port in [*FORWARDED.values(), *NOT_FORWARDED.values()]:
            assert _refused_from(site, "127.0.0.1", port), f"127.0.0.1:{port} answers in the ns"
        for what, port in NOT_FORWARDED.items():
            assert _refused_from(site, site.host_ip, port), f"{what} reachable past the gateway"
        direct = site.engine("plan", site.spec(name, gateway=False), timeout=120)
        assert direct.returncode == 1 and "Traceback" not in direct.stderr, describe(direct)
        assert "127.0.0.1:5000" in direct.stderr, describe(direct)  # keystone, unreachable
        print(f"without the gateway: {direct.stderr.strip()}")

        started = time.monotonic()
        ok(site.engine("sync", site.spec(name), "--yes"))
        took = time.monotonic() - started
        counts = console.counts(name)
        assert counts == {"network": 1, "subnet": 1, "port": 1, "server": 1}, counts
        assert console.server(name, "vm/app").status == "ACTIVE"
        log = site.nginx_log.read_text()
        client = f"{site.engine_ip} -> "  # nginx saw the engine's namespace as the client
        assert f'{client}identity:5000 "POST /v3/auth/tokens HTTP/1.1" 201' in log, log
        assert f'{client}compute:8774 "POST /v2.1/servers HTTP/1.1" 202' in log, log
        assert f'{client}network:9696 "POST /v2.0/networks HTTP/1.1" 201' in log, log
        assert f'{client}image:9292 "GET /v2/images' in log, log
        ok(site.engine("plan", site.spec(name)))  # converged: exit 0, nothing pending
        ok(site.engine("destroy", name, "--yes"))
        assert console.counts(name) == {}, console.counts(name)
        print(f"sync through the gateway: {took:.1f} s")
    finally:
        console.purge(name)
