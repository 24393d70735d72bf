"""The LB documents on govmomi's vCenter simulator, read as an LB VM's agent reads them.

The CLI syncs a cloudlet; each LB member VM's ``extraConfig`` is read with
pyVmomi (what the VMX hands the guest as ``guestinfo``), and a stand-in
for ``vmware-rpctool`` prints it exactly as the real one does (the value
and a newline, exit 0; ``No value found`` on stderr, exit 1): the agent's
reader must turn that into a document whose back-ends are the targets'
addresses.
"""

from __future__ import annotations

import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import cli, cli_json, ok
from vcsim import OutOfBand, Vcsim, running

from cloudlet.agent.vsphere_source import VsphereSource
from cloudlet.lb.document import decode
from cloudlet.lb.members import documents
from cloudlet.lb.placement import GUESTINFO_KEY

NAME = "vsphere-lbdoc"
TIMEOUT = 120.0
SPEC = """\
apiVersion: cloudlet/v1
kind: Cloudlet
metadata: {name: vsphere-lbdoc}
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
    - {name: net-0, cidr: 10.33.0.0/24}
  securityGroups:
    - {name: web, rules: []}
  loadBalancers:
    - {name: lb-0, type: shared, network: net-0, redundancy: vip, securityGroups: [web]}
  vms:
    - {name: app, network: net-0, expose: {loadBalancer: lb-0, ports: [{protocol: tcp, port: 443}]}}
"""
API = (
    "    - {name: api, network: net-0,"
    " expose: {loadBalancer: lb-0, ports: [{protocol: udp, port: 53}]}}\n"
)
MEMBERS = ("lb-0.0", "lb-0.1")


@pytest.fixture(scope="module")
def sim() -> Iterator[Vcsim]:
    with running() as s:
        yield s


@pytest.fixture
def console(sim: Vcsim) -> Iterator[OutOfBand]:
    c = OutOfBand(sim)
    yield c
    c.close()


def guestinfo(console: OutOfBand, member: str) -> str | None:
    """The VM's ``guestinfo.cloudlet.lb`` as the VMX holds it (the last entry wins)."""
    vm = console.find(f"DC0/vm/cloudlet-{NAME}/vms/{NAME}.{member}")
    assert vm is not None, member
    options = console.props(vm, "config.extraConfig").get("config.extraConfig") or []
    values = {o.key: o.value for o in options}
    return values.get(GUESTINFO_KEY)


def rpctool(tmp_path: Path, value: str | None) -> VsphereSource:
    """A stand-in for vmware-rpctool inside that VM, answering ``info-get`` as it does."""
    held = tmp_path / "guestinfo.value"
    if value:
        held.write_text(value)
    elif held.exists():
        held.unlink()
    script = tmp_path / "vmware-rpctool"
    script.write_text(
        f"#!{sys.executable}\n"
        "import pathlib, sys\n"
        f"assert sys.argv[1:] == ['info-get {GUESTINFO_KEY}'], sys.argv\n"
        f"held = pathlib.Path({str(held)!r})\n"
        "if not held.exists():\n"
        "    sys.stderr.write('No value found\\n'); sys.exit(1)\n"
        "sys.stdout.write(held.read_text() + '\\n')\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return VsphereSource((str(script),))


def read(console: OutOfBand, member: str, tmp_path: Path) -> str | None:
    return rpctool(tmp_path, guestinfo(console, member)).read()


def test_each_member_reads_its_document_from_guestinfo_and_it_follows_changes(
    sim: Vcsim, console: OutOfBand, state_dir: Path, tmp_path: Path
) -> None:
    run: dict[str, Any] = {"state_dir": state_dir, "env": sim.env(), "timeout": TIMEOUT}
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    assert cli_json("sync", spec, "--yes", "--json", **run)["outcome"] == "converged"
    status = cli_json("status", NAME, "--json", **run)
    addr = {r["id"]: r.get("address") for r in status["resources"]}
    app, vip = addr["port/app"], addr["vip/lb-0"]
    assert app and vip

    for member in MEMBERS:
        text = read(console, member, tmp_path)
        assert text is not None, member
        cfg = decode(text, "/run/lb")
        assert [
            (li.protocol, li.port, li.bind, [(b.id, b.address, b.port) for b in li.backends])
            for li in cfg.listeners
        ] == [("tcp", 443, vip, [("vm/app", app, 443)])]
        assert cfg.vrrp is not None and cfg.vrrp.vip.partition("/")[0] == vip
    first, second = (decode(str(read(console, m, tmp_path)), "/r").vrrp for m in MEMBERS)
    assert first and second and first.peers == (second.source,) and second.peers == (first.source,)

    # A listener more (UDP): the re-sync rewrites both members' guestinfo.
    spec.write_text(SPEC + API)
    assert cli_json("sync", spec, "--yes", "--json", **run)["outcome"] == "converged"
    api = {
        r["id"]: r.get("address") for r in cli_json("status", NAME, "--json", **run)["resources"]
    }
    for member in MEMBERS:
        got = {li.name: li for li in decode(str(read(console, member, tmp_path)), "/r").listeners}
        assert sorted(got) == ["lb-listener/lb-0.api.udp.53", "lb-listener/lb-0.app.tcp.443"]
        new = got["lb-listener/lb-0.api.udp.53"]
        assert (new.protocol, new.port) == ("udp", 53)
        assert [(b.id, b.address) for b in new.backends] == [("vm/api", api["port/api"])]

    # The LB's records deleted (as a destroy does first): the documents go.
    provider = sim.provider()
    try:
        seen = provider.observe(NAME)
        for kind in ("lb-listener", "lb"):
            for obj in (o for o in seen if o.kind == kind):
                provider.delete(NAME, obj)
    finally:
        provider.close()
    for member in MEMBERS:
        assert not guestinfo(console, member), member
        assert read(console, member, tmp_path) is None

    ok(cli("destroy", NAME, "--yes", **run))
    assert console.leftovers(NAME) == []


def fresh_documents(sim: Vcsim) -> dict[str, str]:
    """What a sync would write now: the documents built from the provider's observe."""
    provider = sim.provider()
    try:
        return documents("lb/lb-0", provider.observe(NAME))
    finally:
        provider.close()


def documents_held(console: OutOfBand) -> dict[str, str | None]:
    return {f"vm/{m}": guestinfo(console, m) for m in MEMBERS}


def uid_of(sim: Vcsim, rid: str) -> str:
    provider = sim.provider()
    try:
        return next(o.uid for o in provider.observe(NAME) if o.id == rid)
    finally:
        provider.close()


def test_a_member_or_target_remade_alone_gets_its_documents_back(
    sim: Vcsim, console: OutOfBand, state_dir: Path, tmp_path: Path
) -> None:
    """The LB's records are folder records: a member or target VM deleted behind
    our back comes back alone (the LB is not touched), and its document (or the
    address in every document) must come back with it."""
    run: dict[str, Any] = {"state_dir": state_dir, "env": sim.env(), "timeout": TIMEOUT}
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    assert cli_json("sync", spec, "--yes", "--json", **run)["outcome"] == "converged"
    before = documents_held(console)
    assert before == fresh_documents(sim)

    # The second member deleted out of band: re-made, with its document.
    gone = uid_of(sim, "vm/lb-0.1")
    console.remove(gone)
    assert console.find(f"DC0/vm/cloudlet-{NAME}/vms/{NAME}.lb-0.1") is None
    assert cli_json("sync", spec, "--yes", "--json", **run)["outcome"] == "converged"
    assert uid_of(sim, "vm/lb-0.1") != gone
    after = documents_held(console)
    assert after["vm/lb-0.1"], "the re-made member has no document"
    assert after == fresh_documents(sim) == before
    assert read(console, "lb-0.1", tmp_path) == before["vm/lb-0.1"]

    # The target deleted out of band, its port's record moved to another
    # address: the target is re-made there, and both documents must say so.
    old = next(b for _, b in backends(before["vm/lb-0.0"]))
    new = "10.33.0.200"
    console.set_record_attr(uid_of(sim, "port/app"), "address", new)
    console.remove(uid_of(sim, "vm/app"))
    assert cli_json("sync", spec, "--yes", "--json", **run)["outcome"] == "converged"
    docs = documents_held(console)
    for member, text in docs.items():
        assert backends(text) == [("vm/app", new)], (member, old)
    assert docs == fresh_documents(sim)

    ok(cli("destroy", NAME, "--yes", **run))
    assert console.leftovers(NAME) == []


def backends(text: str | None) -> list[tuple[str, str]]:
    cfg = decode(str(text), "/run/lb")
    return [(b.id, b.address) for li in cfg.listeners for b in li.backends]
