"""The gateway for real (issue 12): the engine in a network namespace whose only way out is
the rendered nginx, in front of the OpenStack test cloud.

The namespace, its veth and nginx are tests/integration/gatewaynet.py's (shared with the
vSphere gateway test). nginx listens on the host side of the veth, one port per endpoint (the
same port numbers as the cloud's), and proxies to the cloud on 127.0.0.1.

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

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from conftest import describe, ok
from gatewaynet import EngineNet, engine_net, loopback_only, nginx, require_tools
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


@attrs.frozen
class Site:
    net: EngineNet
    nginx_log: Path
    state: Path
    tmp: Path

    @property
    def host_ip(self) -> str:  # the gateway's address (host side of the veth)
        return self.net.host_ip

    @property
    def engine_ip(self) -> str:
        return self.net.engine_ip

    def engine(
        self, *args: str | Path, timeout: float = TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """``python -m cloudlet ...`` inside the engine's namespace."""
        return self.net.engine(self.state, self.tmp, *args, timeout=timeout)

    def spec(self, name: str, gateway: bool = True) -> Path:
        gw = GATEWAY.format(address=self.host_ip, clients=self.net.subnet) if gateway else ""
        path = self.tmp / f"{name}-{'gw' if gateway else 'direct'}.yaml"
        path.write_text(SPEC.format(name=name, gateway=gw))
        return path


def _cloud_binds_loopback_only() -> None:
    wide = loopback_only([*FORWARDED.values(), *NOT_FORWARDED.values()])
    assert not wide, (
        f"the cloud listens beyond loopback ({wide}): the host-side veth address would reach it "
        "directly; this layout then needs nft rules in the engine's namespace (see docstring)"
    )


@pytest.fixture(scope="module")
def console() -> Iterator[Console]:
    cloud_config()
    c = Console()
    yield c
    c.close()


@pytest.fixture
def site(tmp_path: Path, console: Console) -> Iterator[Site]:
    """Namespace, veth, the rendered nginx running; all torn down, pass or fail."""
    require_tools()
    _cloud_binds_loopback_only()
    with engine_net() as net:
        site = Site(net, tmp_path / "nginx.log", tmp_path / "state", tmp_path)
        rundir, conf = tmp_path / "run", tmp_path / "nginx.conf"
        rundir.mkdir()
        ok(site.engine("export", "gateway", site.spec("render"), "-o", conf, "--run-dir", rundir))
        with nginx(conf, site.nginx_log, net.host_ip, FORWARDED.values()):
            yield site


def test_the_engine_converges_through_the_gateway_and_cannot_go_around_it(
    site: Site, console: Console
) -> None:
    name = f"gw-{uuid.uuid4().hex[:8]}"
    try:
        # the namespace reaches the cloud through the gateway only
        for port in [*FORWARDED.values(), *NOT_FORWARDED.values()]:
            assert site.net.refused("127.0.0.1", port), f"127.0.0.1:{port} answers in the ns"
        for what, port in NOT_FORWARDED.items():
            assert site.net.refused(site.host_ip, port), f"{what} reachable past the gateway"
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
