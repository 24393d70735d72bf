"""The vSphere provider on govmomi's vCenter simulator: the shared contract, then its own rules.

One simulator per module (started in ~50 ms); every test works under fresh
owners, as on a shared real vCenter.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from provider_contract import (
    Capabilities,
    ProviderHarness,
    provider_contract_tests,
    sample_resources,
)
from vcsim import PLATFORM, USER, OutOfBand, Vcsim, running

from cloudlet.errors import ProviderError
from cloudlet.model.resources import Observed, Resource
from cloudlet.providers.base import Provider
from cloudlet.providers.vsphere import VsphereProvider, load_config
from cloudlet.providers.vsphere import snapshot as snapshot_module

_SIM: list[Vcsim] = []


@pytest.fixture(scope="module", autouse=True)
def simulator() -> Iterator[Vcsim]:
    with running() as sim:
        _SIM.append(sim)
        try:
            yield sim
        finally:
            _SIM.remove(sim)


class VsphereHarness(ProviderHarness):
    """A provider on the module's simulator; the console is pyVmomi straight at it."""

    def __init__(self, sim: Vcsim) -> None:
        self.sim = sim
        self.console: OutOfBand
        super().__init__(sim.provider, OutOfBand(sim))

    def remove(self, owner: str, uid: str) -> None:
        self.console.remove(uid)

    def set_attr(self, owner: str, uid: str, key: str, value: str) -> None:
        self.console.set_record_attr(uid, key, value)


def make_vsphere_harness() -> VsphereHarness:
    return VsphereHarness(_SIM[-1])


# Routers and floating IPs are records (vSphere has neither), and the
# external network is the platform's port group: everything is supported.
TestVsphereContract = provider_contract_tests(make_vsphere_harness, caps=Capabilities())

CAPS = Capabilities()
SAMPLE = {r.id: r for r in sample_resources(CAPS)}


@pytest.fixture
def harness(simulator: Vcsim) -> Iterator[VsphereHarness]:
    h = VsphereHarness(simulator)
    yield h
    h.close()


def make(provider: Provider, owner: str, *ids: str) -> dict[str, Observed]:
    return {rid: provider.create(owner, SAMPLE[rid]) for rid in SAMPLE if rid in ids}


VM_CLOSURE = ("network/n", "subnet/n", "port/game", "vm/game")


def test_vm_is_a_tagged_clone_with_a_nic_on_its_port_group(harness: VsphereHarness) -> None:
    made = make(harness.provider, "vm-shape", *VM_CLOSURE)
    con = harness.console
    vm = con.ref(made["vm/game"].uid)
    props = con.props(
        vm,
        "name",
        "config.hardware.numCPU",
        "config.hardware.memoryMB",
        "network",
        "config.extraConfig",
        "runtime.powerState",
    )
    assert props["name"] == "vm-shape.game"
    assert (props["config.hardware.numCPU"], props["config.hardware.memoryMB"]) == (1, 2048)
    assert [n._moId for n in props["network"]] == [made["network/n"].uid]
    assert props["runtime.powerState"] == "poweredOn"
    extra = {o.key: o.value for o in props["config.extraConfig"]}
    assert extra["guestinfo.cloudlet.owner"] == "vm-shape"
    assert extra["guestinfo.cloudlet.id"] == "vm/game"
    nics = json.loads(extra["guestinfo.cloudlet.nics"])
    assert nics == [
        {"port": "port/game", "address": "10.213.0.2", "prefix": 24, "gateway": "10.213.0.1"}
    ]
    assert con.fields_of(vm) == {"cloudlet.owner": "vm-shape", "cloudlet.id": "vm/game"}
    pg = con.ref(made["network/n"].uid)
    assert con.props(pg, "name")["name"] == "vm-shape.n"


def test_unknown_flavor_is_a_permanent_error(harness: VsphereHarness) -> None:
    make(harness.provider, "flavorless", "network/n", "subnet/n", "port/game")
    vm = SAMPLE["vm/game"]
    odd = Resource(vm.id, {**vm.attrs, "flavor": "m9.huge"}, vm.deps)
    with pytest.raises(ProviderError, match=r"unknown flavor 'm9\.huge'") as err:
        harness.provider.create("flavorless", odd)
    assert not err.value.transient


def test_a_port_group_in_use_is_not_deleted(harness: VsphereHarness) -> None:
    """The simulator would accept it and leave dangling NICs; vCenter refuses."""
    made = make(harness.provider, "busy-net", *VM_CLOSURE)
    net = made["network/n"]
    for rid in ("subnet/n", "port/game"):  # take the records away: only the NIC uses it now
        harness.console.remove(made[rid].uid)
    with pytest.raises(ProviderError, match="still used by VMs") as err:
        harness.provider.delete("busy-net", net)
    assert err.value.transient
    harness.provider.delete("busy-net", made["vm/game"])
    harness.provider.delete("busy-net", net)
    assert harness.console.leftovers("busy-net") == []


def test_memory_changed_out_of_band_is_a_flavor_drift_healed_by_update(
    harness: VsphereHarness,
) -> None:
    made = make(harness.provider, "resized", *VM_CLOSURE)
    uid = made["vm/game"].uid
    harness.console.set_memory(uid, 3000)
    seen = {o.id: o for o in harness.provider.observe("resized")}["vm/game"]
    assert seen.attrs["flavor"] == "custom-1cpu-3000mb"
    healed = harness.provider.update("resized", SAMPLE["vm/game"], seen)
    assert healed.attrs["flavor"] == "m1.small" and healed.uid == uid
    bigger = Resource("vm/game", {**SAMPLE["vm/game"].attrs, "flavor": "m1.large"}, ("port/game",))
    harness.provider.update("resized", bigger, healed)
    again = {o.id: o for o in harness.provider.observe("resized")}["vm/game"]
    assert (again.attrs["flavor"], again.attrs["status"]) == ("m1.large", "ACTIVE")
    vm = harness.console.ref(uid)
    props = harness.console.props(vm, "config.hardware.numCPU", "config.hardware.memoryMB")
    assert (props["config.hardware.numCPU"], props["config.hardware.memoryMB"]) == (4, 8192)


def test_an_unfinished_build_is_completed_not_duplicated(
    harness: VsphereHarness, simulator: Vcsim
) -> None:
    """A crash between clone and mark leaves an untagged clone; create adopts it."""
    owner = "half-built"
    make(harness.provider, owner, "network/n", "subnet/n", "port/game")
    con = harness.console
    folder = con.find(f"DC0/vm/cloudlet-{owner}").CreateFolder("vms")
    template = con.find("DC0/vm/DC0_H0_VM0")
    cluster = con.find("DC0/host/DC0_C0")
    pool = con.props(cluster, "resourcePool")["resourcePool"]
    from pyVim.task import WaitForTask
    from pyVmomi import vim

    spec = vim.vm.CloneSpec(location=vim.vm.RelocateSpec(pool=pool), powerOn=False)
    task = template.CloneVM_Task(folder=folder, name=f"{owner}.game", spec=spec)
    WaitForTask(task)
    clone = task.info.result
    seen = harness.provider.observe(owner)
    assert [(o.uid, o.id) for o in seen if o.kind == "vm"] == [(clone._moId, None)]
    made = harness.provider.create(owner, SAMPLE["vm/game"])
    assert made.uid == clone._moId
    vms = [o for o in harness.provider.observe(owner) if o.kind == "vm"]
    assert [(o.uid, o.id, o.attrs["status"]) for o in vms] == [(clone._moId, "vm/game", "ACTIVE")]


def test_observe_is_one_collector_call_whatever_the_size(
    harness: VsphereHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = "counted"
    make(harness.provider, owner, *SAMPLE)
    calls: list[int] = []
    real = snapshot_module.retrieve

    def counting(*args: object, **kw: object) -> object:
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(snapshot_module, "retrieve", counting)
    assert len(harness.provider.observe(owner)) == len(SAMPLE)
    assert len(calls) == 1


def test_the_owner_folder_goes_with_the_last_object(harness: VsphereHarness) -> None:
    owner = "tidy"
    made = make(harness.provider, owner, "security-group/web")
    assert harness.console.leftovers(owner) == [f"folder cloudlet-{owner}"]
    harness.provider.delete(owner, made["security-group/web"])
    assert harness.console.leftovers(owner) == []
    assert harness.provider.observe(owner) == []


def test_the_last_two_objects_deleted_at_once_take_the_folder_along(
    harness: VsphereHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both deletes read the owner's objects before either deletes, so each
    sees the other still there (as the engine's parallel destroy does)."""
    owner = "tidy-race"
    made = make(harness.provider, owner, "security-group/web")
    made["security-group/db"] = harness.provider.create(
        owner, Resource("security-group/db", {"rules": ()})
    )
    both_read = threading.Barrier(2, timeout=30)
    read = harness.provider.snapshot

    def read_then_wait(*args: Any, **kwargs: Any) -> Any:
        snap = read(*args, **kwargs)
        both_read.wait()
        return snap

    monkeypatch.setattr(harness.provider, "snapshot", read_then_wait)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda o: harness.provider.delete(owner, o), made.values()))
    monkeypatch.undo()
    assert harness.console.leftovers(owner) == []
    assert harness.provider.observe(owner) == []


def test_an_update_records_the_lbs_address_and_keeps_a_ports_own(
    harness: VsphereHarness,
) -> None:
    """Only ports, VIPs and floating IPs have an address the provider hands
    out, which an update keeps; an LB's ``address`` names its carrier, an
    attribute the engine sets like any other (redundancy none -> vip moves
    it from the first leg's port to the VIP)."""
    owner = "lb-address"
    made = make(harness.provider, owner, "network/n", "subnet/n", "port/game", "lb/lb")
    lb = SAMPLE["lb/lb"]
    moved = Resource(lb.id, {**lb.attrs, "address": "port/lb.0.ext"}, ["vm/lb.0", "port/lb.0.ext"])
    assert harness.provider.update(owner, moved, made["lb/lb"]).attrs["address"] == "port/lb.0.ext"
    port = SAMPLE["port/game"]
    grouped = Resource(port.id, {**port.attrs, "securityGroups": ("security-group/web",)})
    kept = harness.provider.update(owner, grouped, made["port/game"]).attrs["address"]
    assert kept == made["port/game"].attrs["address"] == "10.213.0.2"
    seen = {o.id: o for o in harness.provider.observe(owner)}
    assert seen["lb/lb"].attrs["address"] == "port/lb.0.ext"
    assert seen["port/game"].attrs["address"] == "10.213.0.2"
    assert seen["port/game"].attrs["securityGroups"] == ("security-group/web",)


def test_external_addresses_are_unique_across_owners(harness: VsphereHarness) -> None:
    ext = SAMPLE["port/lb.0.ext"]
    first = harness.provider.create("ext-a", ext)
    second = harness.provider.create("ext-b", ext)
    again = harness.reopen().create("ext-c", ext)
    addresses = {str(o.attrs["address"]) for o in (first, second, again)}
    assert len(addresses) == 3


def test_a_wrong_password_is_permanent_and_never_printed(simulator: Vcsim) -> None:
    env = {**simulator.env(), "VSPHERE_PASSWORD": "not-the-Password-123"}
    provider = VsphereProvider(PLATFORM, load_config(PLATFORM, env))
    with pytest.raises(ProviderError) as err:
        provider.observe("anyone")
    assert not err.value.transient
    assert "InvalidLogin" in str(err.value)
    assert "not-the-Password-123" not in str(err.value)
    assert "not-the-Password-123" not in repr(provider.config)
    assert USER not in str(err.value)
    provider.close()


def test_missing_credentials_name_the_variables() -> None:
    with pytest.raises(ProviderError, match="VSPHERE_HOST") as err:
        load_config(PLATFORM, {"VSPHERE_CONFIG": "", "HOME": "/nonexistent"})
    assert not err.value.transient


def test_a_missing_template_is_permanent(simulator: Vcsim) -> None:
    import attrs

    broken = attrs.evolve(PLATFORM, template="no-such-template")
    provider = simulator.provider(broken)
    for rid in ("network/n", "subnet/n", "port/game"):
        provider.create("untemplated", SAMPLE[rid])
    with pytest.raises(ProviderError, match="no-such-template") as err:
        provider.create("untemplated", SAMPLE["vm/game"])
    assert not err.value.transient
    provider.close()


def test_an_expired_session_is_transient_and_logs_in_again(harness: VsphereHarness) -> None:
    provider = harness.provider
    assert isinstance(provider, VsphereProvider)
    provider.observe("relogin")
    provider.session.content.sessionManager.Logout()  # as vCenter does after idle time
    with pytest.raises(ProviderError, match="NotAuthenticated") as err:
        provider.observe("relogin")
    assert err.value.transient
    assert provider.observe("relogin") == []  # the engine's retry
    net = provider.create("relogin", SAMPLE["network/n"])  # on the switch found before
    provider.session.connection.close()  # a connection gone for good: start over
    assert [o.uid for o in provider.observe("relogin")] == [net.uid]
    other = provider.create("relogin", SAMPLE["network/m"])  # the switch, looked up again
    for obj in (net, other):
        provider.delete("relogin", obj)


def test_external_ports_on_a_standard_network(simulator: Vcsim) -> None:
    import attrs

    platform = attrs.evolve(PLATFORM, network="VM Network")
    provider = simulator.provider(platform)
    ext = SAMPLE["port/lb.0.ext"]
    port = provider.create("std-net", ext)
    vm = provider.create(
        "std-net", Resource("vm/lb.0", {**SAMPLE["vm/lb.0"].attrs, "ports": (ext.id,)}, [ext.id])
    )
    console = OutOfBand(simulator)
    networks = console.props(console.ref(vm.uid), "network")["network"]
    assert [console.props(n, "name")["name"] for n in networks] == ["VM Network"]
    assert port.attrs["address"] != ""
    for obj in (vm, port):
        provider.delete("std-net", obj)
    assert console.leftovers("std-net") == []
    console.close()
    provider.close()


def test_config_file_adds_flavors_images_and_the_external_pool(
    tmp_path: Path, simulator: Vcsim
) -> None:
    path = tmp_path / "vsphere.yaml"
    path.write_text(
        "flavors: {g1.huge: {cpus: 16, memoryMb: 65536}}\n"
        "images: {game-server: DC0_H0_VM1}\n"
        "externalCidr: 203.0.113.0/28\n"
    )
    env = {**simulator.env(), "VSPHERE_CONFIG": str(path)}
    config = load_config(PLATFORM, env)
    assert config.site.flavors["g1.huge"] == (16, 65536)
    assert config.site.flavors["m1.small"] == (1, 2048)
    provider = VsphereProvider(PLATFORM, config)
    content = provider.session.content
    assert (
        provider.session.site.template(content, "game-server")._moId
        == OutOfBand(simulator).find("DC0/vm/DC0_H0_VM1")._moId
    )
    made = provider.create("pool", SAMPLE["port/lb.0.ext"])
    assert made.attrs["address"] == "203.0.113.2"
    provider.delete("pool", made)
    provider.close()


def test_credentials_from_the_file_and_the_environment_winning(tmp_path: Path) -> None:
    path = tmp_path / "vsphere.yaml"
    path.write_text("host: vc.example.com\nuser: file-user\npassword: file-Secret-1\n")
    config = load_config(PLATFORM, {"VSPHERE_CONFIG": str(path), "VSPHERE_USER": "env-user"})
    e = config.endpoint
    assert (e.host, e.port, e.protocol, e.path, e.user) == (
        "vc.example.com",
        443,
        "https",
        "/sdk",
        "env-user",
    )
    assert "file-Secret-1" not in repr(config)
    with pytest.raises(ProviderError, match="does not exist"):
        load_config(PLATFORM, {"VSPHERE_CONFIG": str(tmp_path / "missing.yaml")})


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("vc.example.com", ("vc.example.com", 443, "https", "/sdk")),
        ("vc:8443", ("vc", 8443, "https", "/sdk")),
        ("http://127.0.0.1:8989/sdk", ("127.0.0.1", 8989, "http", "/sdk")),
    ],
)
def test_host_forms(value: str, parsed: tuple[str, int, str, str]) -> None:
    from cloudlet.providers.vsphere.config import parse_host

    assert parse_host(value) == parsed


def test_tls_is_verified_unless_told_otherwise() -> None:
    with running(tls=True) as sim:
        assert sim.url.startswith("https://")
        strict = sim.provider()
        with pytest.raises(ProviderError, match="VSPHERE_INSECURE") as err:
            strict.observe("tls")
        assert not err.value.transient
        env = {**sim.env(), "VSPHERE_INSECURE": "1"}
        lax = VsphereProvider(PLATFORM, load_config(PLATFORM, env))
        assert lax.observe("tls") == []
        for p in (strict, lax):
            p.close()


def test_task_waits_back_off_instead_of_spinning() -> None:
    from types import SimpleNamespace

    from cloudlet.providers.vsphere.tasks import wait_for

    states = iter(["queued", "running", "running", "running", "success"])
    slept: list[float] = []
    now = [0.0]

    def read() -> object:
        return SimpleNamespace(state=next(states), result="done")

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    assert wait_for(read, "t", 60, sleep=sleep, clock=lambda: now[0]) == "done"
    assert slept == [0.02, 0.04, 0.08, 0.16]
    stuck = iter(lambda: SimpleNamespace(state="running"), None)
    with pytest.raises(ProviderError, match="still running") as err:
        wait_for(lambda: next(stuck), "t", 3, sleep=sleep, clock=lambda: now[0])
    assert err.value.transient
    assert max(slept) <= 1.0


def test_a_flavor_grows_in_place_with_hot_add_and_power_cycles_without(
    harness: VsphereHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyVim.task import WaitForTask
    from pyVmomi import vim

    provider = harness.provider
    assert isinstance(provider, VsphereProvider)
    made = make(provider, "hot", *VM_CLOSURE)
    vm = made["vm/game"]
    offs: list[str] = []
    real_power = provider._vms._power

    def power(ref: object, rid: str, *, on: bool) -> None:
        offs.extend([] if on else [rid])
        real_power(ref, rid, on=on)

    monkeypatch.setattr(provider._vms, "_power", power)
    hot = vim.vm.ConfigSpec(cpuHotAddEnabled=True, memoryHotAddEnabled=True)
    WaitForTask(harness.console.ref(vm.uid).ReconfigVM_Task(hot))
    medium = Resource("vm/game", {**SAMPLE["vm/game"].attrs, "flavor": "m1.medium"}, ("port/game",))
    grown = provider.update("hot", medium, vm)
    assert offs == []  # grown while running
    provider.update("hot", SAMPLE["vm/game"], grown)  # shrinking needs a power cycle
    assert offs == ["vm/game"]
    seen = {o.id: o for o in provider.observe("hot")}["vm/game"]
    assert (seen.attrs["flavor"], seen.attrs["status"]) == ("m1.small", "ACTIVE")
