"""The vSphere gateway for real (issue 12): the engine in a network namespace whose only way out
is the rendered nginx (``stream``, TLS passed through), in front of vcsim serving https.

The namespace, its veth and nginx are gatewaynet.py's (shared with the OpenStack gateway test).
vcsim serves https on 127.0.0.1 with a certificate the test makes (testca.py: a CA and a leaf
naming IP 127.0.0.1; httptest's built-in one has a 1024-bit key that OpenSSL refuses), so from the
namespace its port is reachable only through nginx, on the host side of the veth, same port.

What it shows: ``nginx -t`` accepts the rendered file; through the gateway the certificate the
namespace sees is vCenter's own (nothing terminates TLS in between), it verifies against the CA
for vCenter's name (127.0.0.1) and not for the gateway's address, which is why the engine names
vCenter when it dials the gateway; a sync in the namespace converges (VMs and port groups found
in vcsim from outside), nginx logged the engine's connections, a plan is empty, destroy removes
everything; the same spec without the gateway fails to connect, and vcsim's port is refused.
"""

from __future__ import annotations

import hashlib
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from conftest import describe, ok
from gatewaynet import EngineNet, engine_net, loopback_only, nginx, require_tools
from testca import certificates
from vcsim import PASSWORD, USER, OutOfBand, Vcsim, running

TIMEOUT = 300.0
SPEC = """\
apiVersion: cloudlet/v1
kind: Cloudlet
metadata: {{name: {name}}}
spec:
  platform:
    type: vsphere
    datacenter: DC0
    cluster: DC0_C0
    datastore: LocalDS_0
    network: DC0_DVPG0
    template: DC0_H0_VM0
{gateway}  dataPath: no-router
  defaults: {{image: ubuntu-22.04, flavor: m1.small}}
  networks:
    - {{name: internal, cidr: 10.63.0.0/24}}
  vms:
    - {{name: app, network: internal}}
    - {{name: db, network: internal}}
"""
GATEWAY = """\
    gateway:
      address: {address}
      endpoints:
        sdk: {sdk}
      clients: [{clients}]
"""
#: The peer's certificate through the gateway, and whether it verifies for a name.
PROBE = """\
import hashlib, socket, ssl, sys
address, port, cafile, name = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
context = ssl.create_default_context(cafile=cafile)
with socket.create_connection((address, port), timeout=5) as raw:
    try:
        with context.wrap_socket(raw, server_hostname=name) as tls:
            print("verified", hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest())
    except ssl.SSLCertVerificationError as err:
        print("refused", err.verify_message)
"""


@attrs.frozen
class Tls:
    ca: Path
    cert: Path
    key: Path


def _make_tls(tmp: Path) -> Tls:
    """A CA, and vCenter's certificate from it for IP 127.0.0.1."""
    made = certificates(tmp)
    return Tls(Path(made["ca.crt"]), Path(made["server.crt"]), Path(made["server.key"]))


@attrs.frozen
class Site:
    net: EngineNet
    sim: Vcsim
    tls: Tls
    port: int  # vcsim's, and the gateway's
    nginx_log: Path
    tmp: Path

    def engine(
        self, *args: str | Path, env: dict[str, str] | None = None, timeout: float = TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """The CLI in the engine's namespace with the credentials and the CA, no vCenter host
        (the gateway's sdk endpoint names vCenter) and an empty config file."""
        empty = self.tmp / "vsphere.yaml"
        empty.touch()
        creds = {"VSPHERE_USER": USER, "VSPHERE_PASSWORD": PASSWORD, "VSPHERE_HOST": ""}
        base = {**creds, "VSPHERE_CA_FILE": str(self.tls.ca), "VSPHERE_CONFIG": str(empty)}
        state = self.tmp / "state"
        return self.net.engine(state, self.tmp, *args, env={**base, **(env or {})}, timeout=timeout)

    def spec(self, name: str, gateway: bool = True) -> Path:
        gw = GATEWAY.format(address=self.net.host_ip, sdk=self.sim.url, clients=self.net.subnet)
        path = self.tmp / f"{name}-{'gw' if gateway else 'direct'}.yaml"
        path.write_text(SPEC.format(name=name, gateway=gw if gateway else ""))
        return path

    def probe(self, name: str) -> str:
        """What the namespace sees of the TLS peer behind the gateway, verified for ``name``."""
        argv = [self.net.host_ip, str(self.port), str(self.tls.ca), name]
        done = self.net.in_ns("python3", "-c", PROBE, *argv)
        assert done.returncode == 0, describe(done)
        return done.stdout.strip()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """vcsim on https, the namespace, the rendered nginx running; all stopped, pass or fail."""
    require_tools()
    tls = _make_tls(tmp_path)
    with running(cert=(tls.cert, tls.key)) as sim, engine_net() as net:
        port = int(sim.url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        assert sim.url == f"https://127.0.0.1:{port}/sdk", sim.url
        assert not loopback_only([port]), "vcsim listens beyond loopback"
        site = Site(net, sim, tls, port, tmp_path / "nginx.log", tmp_path)
        rundir, conf = tmp_path / "run", tmp_path / "nginx.conf"
        rundir.mkdir()
        ok(site.engine("export", "gateway", site.spec("render"), "-o", conf, "--run-dir", rundir))
        with nginx(conf, site.nginx_log, net.host_ip, [port]):
            yield site


def _logged(site: Site, wanted: str) -> list[str]:
    """nginx's access lines with ``wanted``; stream logs a connection when it closes, which is
    just after the engine's process exits: wait for it."""
    deadline = time.monotonic() + 10
    while True:
        lines = [line for line in site.nginx_log.read_text().splitlines() if wanted in line]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def test_the_engine_converges_through_the_gateway_and_vcenter_is_verified_end_to_end(
    site: Site,
) -> None:
    name = f"gw-{uuid.uuid4().hex[:8]}"
    console = OutOfBand(site.sim)
    try:
        # the namespace reaches vcsim through the gateway only
        assert site.net.refused("127.0.0.1", site.port), "vcsim answers in the ns"
        direct = site.engine(
            "plan", site.spec(name, gateway=False), env={"VSPHERE_HOST": site.sim.url}
        )
        assert direct.returncode == 1 and "Traceback" not in direct.stderr, describe(direct)
        assert f"login to 127.0.0.1:{site.port}: vCenter connection failed" in direct.stderr
        print(f"without the gateway: {direct.stderr.strip()}")

        # TLS passes through: the namespace sees vcsim's own certificate, valid for vCenter's
        # name and not for the gateway's address (so the engine must name vCenter, and does)
        own = hashlib.sha256(ssl.PEM_cert_to_DER_cert(site.tls.cert.read_text())).hexdigest()
        assert site.probe("127.0.0.1") == f"verified {own}"
        assert site.probe(site.net.host_ip).startswith("refused IP address mismatch")

        # the engine verifies it too: without the CA it refuses, unless told to be insecure
        untrusted = site.engine("plan", site.spec(name), env={"VSPHERE_CA_FILE": ""})
        assert untrusted.returncode == 1, describe(untrusted)
        assert "vCenter's TLS certificate is not trusted" in untrusted.stderr, describe(untrusted)
        assert f"via the gateway {site.net.host_ip}:{site.port}" in untrusted.stderr
        lax = {"VSPHERE_CA_FILE": "", "VSPHERE_INSECURE": "1"}
        ok(site.engine("plan", site.spec(name), env=lax), code=2)  # all to create

        started = time.monotonic()
        ok(site.engine("sync", site.spec(name), "--yes"))
        took = time.monotonic() - started
        for vm in ("app", "db"):
            found = console.find(f"DC0/vm/cloudlet-{name}/vms/{name}.{vm}")
            assert found is not None, vm
            assert console.props(found, "runtime.powerState") == {"runtime.powerState": "poweredOn"}
        assert len(console.leftovers(name)) == 4, console.leftovers(name)  # folder, pg, 2 VMs
        engine = f"{site.net.engine_ip} -> sdk:{site.port} "
        lines = _logged(site, engine)
        assert lines and all(" 200 " in line for line in lines), site.nginx_log.read_text()
        print(f"nginx: {len(lines)} connections from the engine, e.g. {lines[-1]}")

        ok(site.engine("plan", site.spec(name)))  # converged: exit 0, nothing pending
        ok(site.engine("destroy", name, "--yes"))
        assert console.leftovers(name) == [], console.leftovers(name)
        print(f"sync through the gateway: {took:.1f} s")
    finally:
        console.close()
