"""End to end on govmomi's vCenter simulator: the real CLI, then random specs.

The CLI runs in subprocesses with the simulator's address and credentials in
its environment, exactly as an operator runs it against vCenter; drift is
made with pyVmomi behind its back.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from conftest import EXAMPLES, assert_no_traceback, cli, cli_json, ok
from harness import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import cloudlets, edits
from vcsim import PLATFORM, OutOfBand, Vcsim, running

from cloudlet.engine.sync import Engine, SyncOptions
from cloudlet.model.expand import expand
from cloudlet.model.spec import Cloudlet, Metadata
from cloudlet.store.records import StateRepo
from cloudlet.store.sqlite import open_store

EXAMPLE = EXAMPLES / "vsphere.yaml"
NAME = "vsphere-1"
TIMEOUT = 120.0


@pytest.fixture(scope="module")
def sim() -> Iterator[Vcsim]:
    with running() as s:
        yield s


@pytest.fixture
def console(sim: Vcsim) -> Iterator[OutOfBand]:
    c = OutOfBand(sim)
    yield c
    c.close()


def vm_uid(console: OutOfBand, name: str) -> str:
    vm = console.find(f"DC0/vm/cloudlet-{NAME}/vms/{NAME}.{name}")
    assert vm is not None, name
    return str(vm._moId)


def test_example_converges_finds_and_heals_drift_then_destroys(
    sim: Vcsim, console: OutOfBand, state_dir: Path
) -> None:
    env = sim.env()
    run = {"state_dir": state_dir, "env": env, "timeout": TIMEOUT}
    report = cli_json("sync", EXAMPLE, "--yes", "--json", **run)
    assert report["outcome"] == "converged", report
    assert ok(cli("plan", EXAMPLE, **run)).returncode == 0

    status = cli_json("status", NAME, "--json", **run)
    assert {r["state"] for r in status["resources"]} == {"ready"}, status
    public = {m["publicIp"] for m in status["portMappings"]}
    assert len(public) == 1
    assert ipaddress.ip_address(public.pop()) in ipaddress.ip_network("198.18.0.0/15")

    console.remove(vm_uid(console, "api"))  # drift: a VM destroyed ...
    console.set_memory(vm_uid(console, "web"), 1024)  # ... and one resized
    proc = cli("plan", EXAMPLE, "--json", **run)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert_no_traceback(proc)
    actions = {(a["op"], a["id"]) for a in json.loads(proc.stdout)["actions"]}
    assert actions == {("create", "vm/api"), ("update", "vm/web")}

    healed = cli_json("sync", EXAMPLE, "--yes", "--json", **run)
    assert healed["outcome"] == "converged", healed
    assert ok(cli("plan", EXAMPLE, **run)).returncode == 0
    web = console.ref(vm_uid(console, "web"))
    assert console.props(web, "config.hardware.memoryMB")["config.hardware.memoryMB"] == 4096

    ok(cli("destroy", NAME, "--yes", **run))
    assert console.leftovers(NAME) == []


def test_without_credentials_the_cli_says_what_to_set(tmp_path: Path, state_dir: Path) -> None:
    env = {"VSPHERE_HOST": "", "VSPHERE_USER": "", "VSPHERE_PASSWORD": "", "HOME": str(tmp_path)}
    proc = cli("plan", EXAMPLE, state_dir=state_dir, env=env)
    assert proc.returncode == 1
    assert_no_traceback(proc)
    assert "VSPHERE_HOST" in proc.stderr


HA_SPEC = """\
apiVersion: cloudlet/v1
kind: Cloudlet
metadata: {name: vsphere-ha}
spec:
  platform:
    type: vsphere
    datacenter: DC0
    cluster: DC0_C0
    datastore: LocalDS_0
    network: DC0_DVPG0
    template: DC0_H0_VM0
  dataPath: router
  defaults: {flavor: m1.small}
  networks:
    - {name: net-0, cidr: 10.31.0.0/24}
    - {name: net-1, cidr: 10.32.0.0/24}
  securityGroups:
    - {name: web, rules: []}
  loadBalancers:
    - {name: lb-0, type: shared, network: net-0, redundancy: REDUNDANCY, securityGroups: [web]}
  vms:
    - {name: app, network: net-0, expose: {loadBalancer: lb-0, ports: [{protocol: tcp, port: 443}]}}
"""


def test_a_shared_lb_made_redundant_moves_its_address_to_the_vip(
    sim: Vcsim, console: OutOfBand, state_dir: Path, tmp_path: Path
) -> None:
    """Redundancy none -> vip changes ``lb/lb-0``'s address from its first
    leg's port to ``vip/lb-0``: the update must record it, or every round
    plans the same update again ("not converged after 4 rounds")."""
    run = {"state_dir": state_dir, "env": sim.env(), "timeout": TIMEOUT}
    for redundancy, carrier in (("none", "port/lb-0.0.ext"), ("vip", "vip/lb-0")):
        spec = tmp_path / f"ha-{redundancy}.yaml"
        spec.write_text(HA_SPEC.replace("REDUNDANCY", redundancy))
        report = cli_json("sync", spec, "--yes", "--json", **run)
        assert report["outcome"] == "converged", report
        assert ok(cli("plan", spec, **run)).returncode == 0
        status = cli_json("status", "vsphere-ha", "--json", **run)
        states = {r["id"]: r for r in status["resources"]}
        assert {r["state"] for r in states.values()} == {"ready"}, status
        assert [m["publicIp"] for m in status["portMappings"]] == [states[carrier]["address"]]
    ok(cli("destroy", "vsphere-ha", "--yes", **run))
    assert console.leftovers("vsphere-ha") == []  # its folder too (the last deletes race)


_NAMES = itertools.count()


def on_vsphere(c: Cloudlet) -> Cloudlet:
    """The drawn spec under a fresh name, on the simulator's site."""
    spec = attrs.evolve(c.spec, platform=PLATFORM)
    return attrs.evolve(c, metadata=Metadata(f"hyp-{next(_NAMES)}"), spec=spec)


@settings(
    max_examples=examples(5),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.data())
def test_random_specs_and_an_edit_converge_on_vsphere(
    sim: Vcsim, console: OutOfBand, data: st.DataObject
) -> None:
    drawn = data.draw(cloudlets())
    first = on_vsphere(drawn)
    second = attrs.evolve(on_vsphere(data.draw(edits(drawn))), metadata=first.metadata)
    workdir = Path(tempfile.mkdtemp(prefix="cloudlet-vsphere-"))
    store = open_store(workdir)
    provider = sim.provider()
    try:
        engine = Engine(StateRepo(store), provider, SyncOptions(parallelism=8, seed=0))
        for cloudlet in (first, second):
            report = engine.sync(cloudlet)
            assert report.converged, report.message
            seen = provider.observe(cloudlet.name)
            want = expand(cloudlet, engine.repo.get_ports(cloudlet.name)).by_id()
            assert sorted(str(o.id) for o in seen) == sorted(want)
            assert engine.plan(cloudlet).empty
        assert engine.destroy(first.name).converged
        assert provider.observe(first.name) == []
        assert console.leftovers(first.name) == []
    finally:
        provider.close()
        store.close()
        shutil.rmtree(workdir, ignore_errors=True)
