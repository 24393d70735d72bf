"""The fake provider: the shared contract, then the simulated cloud's own rules.

The fake is what every engine test converges against, so its refusals,
failure injection and multi-process safety are tested as hard as the
contract itself.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest
from harness import World
from helpers import cloudlet
from provider_contract import Capabilities, ProviderHarness, provider_contract_tests

from cloudlet.errors import NotFound, ProviderError
from cloudlet.model import kinds
from cloudlet.model.resources import Resource
from cloudlet.model.spec import Cloudlet, Network
from cloudlet.providers.fake import FakeCloud, FakeProvider


class FakeHarness(ProviderHarness):
    """Owns a throwaway state dir; the console is a second handle on the same file."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.console: FakeCloud
        super().__init__(lambda: FakeProvider(state_dir), FakeCloud.for_state_dir(state_dir))

    def close(self) -> None:
        super().close()
        shutil.rmtree(self.state_dir, ignore_errors=True)


def make_fake_harness() -> FakeHarness:
    return FakeHarness(Path(tempfile.mkdtemp(prefix="cloudlet-fake-")))


TestFakeContract = provider_contract_tests(make_fake_harness, caps=Capabilities())
TestFakeContractMinimalCloud = provider_contract_tests(
    make_fake_harness,
    caps=Capabilities(
        supports_router=False, supports_floating_ip=False, supports_external_network=False
    ),
)

OWNER = "berlin-1"
NET = Resource("network/n", {})
SUBNET = Resource("subnet/n", {"network": "network/n", "cidr": "10.0.0.0/29"}, ["network/n"])


def port(name: str, subnet: str = "subnet/n") -> Resource:
    return Resource(f"port/{name}", {"subnet": subnet}, [subnet])


def external_port(name: str) -> Resource:
    return Resource(f"port/{name}", {"network": "@external"})


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[FakeProvider]:
    p = FakeProvider(tmp_path)
    yield p
    p.close()


def test_uids_are_the_clouds_own_ids(provider: FakeProvider) -> None:
    uids = [provider.create(OWNER, r).uid for r in (NET, SUBNET, port("a"))]
    prefixes = ["net", "subnet", "port"]
    assert all(re.fullmatch(rf"{p}-[0-9a-f]{{8}}", u) for p, u in zip(prefixes, uids, strict=True))


def test_missing_dependency_is_refused_and_recorded(provider: FakeProvider) -> None:
    with pytest.raises(ProviderError, match="subnet/n: missing dependency network/n") as err:
        provider.create(OWNER, SUBNET)
    assert not err.value.transient
    assert provider.cloud.list_objects(OWNER) == []
    assert provider.cloud.violations() == [
        f"{OWNER}: create: subnet/n: missing dependency network/n"
    ]
    assert provider.cloud.violations("somebody-else") == []


def test_a_port_needs_its_subnet_even_if_deps_forget_it(provider: FakeProvider) -> None:
    provider.create(OWNER, NET)
    with pytest.raises(ProviderError, match="missing dependency subnet/n"):
        provider.create(OWNER, Resource("port/a", {"subnet": "subnet/n"}))


def test_delete_with_dependents_is_a_transient_conflict(provider: FakeProvider) -> None:
    net = provider.create(OWNER, NET)
    subnet = provider.create(OWNER, SUBNET)
    with pytest.raises(ProviderError, match="network/n: conflict: still in use by subnet/n") as e:
        provider.delete(OWNER, net)
    assert e.value.transient
    assert [o.id for o in provider.observe(OWNER)] == ["network/n", "subnet/n"]
    assert provider.cloud.violations() == [
        f"{OWNER}: delete: network/n: conflict: still in use by subnet/n"
    ]
    provider.delete(OWNER, subnet)
    provider.delete(OWNER, net)
    assert provider.observe(OWNER) == []


def test_dependents_of_another_owner_do_not_block_a_delete(provider: FakeProvider) -> None:
    provider.create("other", NET)
    provider.create("other", SUBNET)
    provider.delete(OWNER, provider.create(OWNER, NET))
    assert provider.cloud.violations() == []


def test_update_rules(provider: FakeProvider) -> None:
    for r in (NET, SUBNET):
        provider.create(OWNER, r)
    sg = Resource("security-group/web", {"rules": ()})
    current = provider.create(OWNER, port("a"))
    moved = Resource("port/a", {"subnet": "subnet/other"}, ["subnet/other"])
    with pytest.raises(ProviderError, match="immutable subnet") as err:
        provider.update(OWNER, moved, current)
    assert not err.value.transient
    grouped = Resource("port/a", {"subnet": "subnet/n", "securityGroups": (sg.id,)}, [sg.id])
    with pytest.raises(ProviderError, match="missing dependency security-group/web"):
        provider.update(OWNER, grouped, current)
    assert len(provider.cloud.violations(OWNER)) == 2
    provider.create(OWNER, sg)
    updated = provider.update(OWNER, grouped, current)
    assert updated.attrs["address"] == current.attrs["address"] == "10.0.0.2"
    assert updated.attrs["securityGroups"] == (sg.id,)
    with pytest.raises(ProviderError, match="conflict"):
        provider.delete(OWNER, provider.observe(OWNER)[-1])  # the group the port now uses


def test_a_vm_cannot_shrink_its_root_disk_in_place(provider: FakeProvider) -> None:
    """Nova's rule, kept by the fake: the provider says so before planning,
    and an update that tries anyway is refused and recorded."""
    provider.create(OWNER, NET)
    provider.create(OWNER, Resource("subnet/n", {"network": "network/n", "cidr": "10.0.0.0/24"}))
    provider.create(OWNER, port("a"))
    big = Resource("vm/a", {"image": "i", "flavor": "m1.large", "ports": ("port/a",)}, ["port/a"])
    made = provider.create(OWNER, big)
    bigger = Resource(big.id, {**big.attrs, "flavor": "m1.xlarge"}, big.deps)
    smaller = Resource(big.id, {**big.attrs, "flavor": "m1.small"}, big.deps)
    unknown = Resource(big.id, {**big.attrs, "flavor": "custom"}, big.deps)
    assert provider.replacement_reason(bigger, made) is None
    assert provider.replacement_reason(unknown, made) is None
    assert provider.replacement_reason(smaller, made) == (
        "a resize cannot shrink the root disk from 80 to 20 GB"
    )
    with pytest.raises(ProviderError) as err:
        provider.update(OWNER, smaller, made)
    assert not err.value.transient
    assert provider.cloud.violations(OWNER) == [
        "berlin-1: update: vm/a: a resize cannot shrink the root disk from 80 to 20 GB"
    ]
    assert provider.update(OWNER, bigger, made).attrs["flavor"] == "m1.xlarge"


def _new_cidr(c: Cloudlet) -> Cloudlet:
    networks = [Network("internal", "10.20.0.0/24")]
    return attrs.evolve(c, spec=attrs.evolve(c.spec, networks=networks))


def _new_image(c: Cloudlet) -> Cloudlet:
    vms = [attrs.evolve(v, image="game-v2") for v in c.spec.vms]
    return attrs.evolve(c, spec=attrs.evolve(c.spec, vms=vms))


@pytest.mark.parametrize(
    ("kind", "attr", "edit"), [("subnet", "cidr", _new_cidr), ("vm", "image", _new_image)]
)
def test_the_fake_is_an_oracle_for_the_models_immutability_table(
    monkeypatch: pytest.MonkeyPatch, kind: str, attr: str, edit: Callable[[Cloudlet], Cloudlet]
) -> None:
    """The fake refuses what a real cloud refuses by its own rules: a model
    table that forgot an immutable attribute plans an in-place update, and
    the fake refuses it (recorded), where the real table converges."""
    before, after = cloudlet(), edit(cloudlet())
    for forget in (False, True):
        if forget:
            lax = {**kinds.IMMUTABLE, kind: kinds.IMMUTABLE[kind] - {attr}}
            monkeypatch.setattr(kinds, "IMMUTABLE", lax)
        world = World()
        try:
            assert world.sync(before).converged
            report = world.sync(after)
            if not forget:
                assert report.converged, report.message
                world.assert_converged_to(after)
                continue
            assert not report.converged
            refused = world.cloud.cloud.violations()
            assert refused and all(f"cannot change immutable {attr} in place" in v for v in refused)
        finally:
            world.close()


def test_failure_rate_one_always_fails_and_late_failures_did_the_work(tmp_path: Path) -> None:
    flaky = FakeProvider(tmp_path, failure_rate=1.0, seed=3)
    late: list[bool] = []
    for i in range(20):
        with pytest.raises(ProviderError) as err:
            flaky.create(OWNER, Resource(f"network/n{i}", {}))
        assert err.value.transient
        late.append("after the work committed" in str(err.value))
    assert any(late) and not all(late)
    made = {str(o.id): o.uid for o in flaky.cloud.list_objects(OWNER)}
    assert set(made) == {f"network/n{i}" for i, was_late in enumerate(late) if was_late}
    with pytest.raises(ProviderError):
        flaky.observe(OWNER)
    victim = flaky.cloud.list_objects(OWNER)[0]
    with pytest.raises(ProviderError) as err:
        flaky.delete(OWNER, victim)
    if "after the work committed" in str(err.value):  # a late failure: the delete was made
        del made[str(victim.id)]
    assert made == {str(o.id): o.uid for o in flaky.cloud.list_objects(OWNER)}
    assert flaky.cloud.calls()["create"] == 20
    steady = FakeProvider(tmp_path)  # the engine's retry adopts what the cloud did make
    retried = {
        f"network/n{i}": steady.create(OWNER, Resource(f"network/n{i}", {})).uid for i in range(20)
    }
    assert {k: retried[k] for k in made} == made
    assert len(steady.observe(OWNER)) == 20


def test_latency_uses_the_injected_sleep_and_commits_before_answering(tmp_path: Path) -> None:
    console = FakeCloud.for_state_dir(tmp_path)
    slept: list[tuple[float, list[str | None]]] = []

    def sleep(seconds: float) -> None:
        slept.append((seconds, [o.id for o in console.list_objects(OWNER)]))

    slow = FakeProvider(tmp_path, latency_ms=200, sleep=sleep)
    slow.create(OWNER, NET)
    assert slept == [(0.1, []), (0.1, ["network/n"])]


def test_jitter_stays_within_its_bounds(tmp_path: Path) -> None:
    slept: list[float] = []
    slow = FakeProvider(tmp_path, latency_ms=100, jitter_ms=50, sleep=slept.append)
    for _ in range(30):
        slow.observe(OWNER)
    delays = [a + b for a, b in zip(slept[::2], slept[1::2], strict=True)]
    assert len(delays) == 30 and len(set(delays)) > 1
    assert all(0.05 <= d <= 0.15 for d in delays)


def _fault_pattern(state_dir: Path, seed: int) -> list[str]:
    flaky = FakeProvider(state_dir, failure_rate=0.5, seed=seed)
    pattern = []
    for i in range(40):
        try:
            flaky.create(OWNER, Resource(f"network/n{i}", {}))
            pattern.append("ok")
        except ProviderError as err:
            pattern.append("after" if "after" in str(err) else "before")
    flaky.close()
    return pattern


def test_failure_injection_is_deterministic_per_seed(tmp_path: Path) -> None:
    first = _fault_pattern(tmp_path / "a", seed=7)
    assert _fault_pattern(tmp_path / "b", seed=7) == first
    assert _fault_pattern(tmp_path / "c", seed=8) != first
    assert set(first) == {"ok", "before", "after"}


def _observe_faults(provider: FakeProvider, n: int) -> list[str]:
    pattern = []
    for _ in range(n):
        try:
            provider.observe(OWNER)
            pattern.append("ok")
        except ProviderError as err:
            pattern.append("after" if "after" in str(err) else "before")
    return pattern


def test_providers_over_one_cloud_continue_its_fault_stream_not_restart_it(
    tmp_path: Path,
) -> None:
    """Each CLI run is a new provider over the same database: restarted from
    the seed, a seed whose first draws fail would fail every run alike."""
    alone = FakeProvider(tmp_path / "alone", failure_rate=0.5, seed=7)
    stream = _observe_faults(alone, 60)
    alone.close()
    first = FakeProvider(tmp_path / "shared", failure_rate=0.5, seed=7)
    head = _observe_faults(first, 20)
    first.close()
    second = FakeProvider(tmp_path / "shared", failure_rate=0.5, seed=7)
    third = FakeProvider(tmp_path / "shared", failure_rate=0.5, seed=7)
    other = FakeProvider(tmp_path / "shared", failure_rate=0.5, seed=8)  # a stream of its own
    rest = []
    for _ in range(20):
        rest += _observe_faults(second, 1) + _observe_faults(third, 1)
        _observe_faults(other, 1)
    assert head == stream[:20]  # a fresh cloud starts the seed's stream
    assert head + rest == stream  # the later providers carry on from where it stood
    assert rest[:20] != head
    for p in (second, third, other):
        p.close()


def test_addresses_are_the_lowest_free_and_reused(provider: FakeProvider) -> None:
    for r in (NET, SUBNET):
        provider.create(OWNER, r)
    ports = {
        name: provider.create(OWNER, port(name)) for name in "abcde"
    }  # a /29: 5 host addresses
    assert [p.attrs["address"] for p in ports.values()] == [f"10.0.0.{i}" for i in range(2, 7)]
    with pytest.raises(ProviderError, match="no free address") as err:
        provider.create(OWNER, port("f"))
    assert not err.value.transient
    provider.delete(OWNER, ports["c"])
    assert provider.create(OWNER, port("g")).attrs["address"] == "10.0.0.4"
    provider.create("other", NET)
    provider.create("other", SUBNET)
    assert provider.create("other", port("a")).attrs["address"] == "10.0.0.2"


def test_a_recreated_subnet_starts_a_fresh_pool(provider: FakeProvider) -> None:
    for r in (NET, SUBNET, port("a"), port("b")):
        provider.create(OWNER, r)
    for obj in reversed(provider.observe(OWNER)[1:]):
        provider.delete(OWNER, obj)
    provider.create(OWNER, SUBNET)
    assert provider.create(OWNER, port("c")).attrs["address"] == "10.0.0.2"


def test_external_and_floating_addresses_come_from_the_public_pool(
    provider: FakeProvider,
) -> None:
    ext = provider.create(OWNER, external_port("lb.0.ext"))
    vip = provider.create(OWNER, Resource("vip/lb", {"network": "@external"}))
    fip = provider.create(OWNER, Resource("floating-ip/lb", {"target": "vip/lb"}, ["vip/lb"]))
    theirs = provider.create("other", external_port("lb.0.ext"))
    addresses = [str(o.attrs["address"]) for o in (ext, vip, fip, theirs)]
    assert addresses[0] == "198.18.0.2"
    assert len(set(addresses)) == 4
    assert all(ipaddress.ip_address(a) in ipaddress.ip_network("198.18.0.0/15") for a in addresses)


def test_untagged_objects_are_observed_with_no_id(provider: FakeProvider) -> None:
    provider.create(OWNER, NET)
    foreign = provider.cloud.add_untagged(OWNER, "vm", {"image": "hand-made"})
    seen = provider.observe(OWNER)
    assert [(o.id, o.uid) for o in seen] == [("network/n", seen[0].uid), (None, foreign.uid)]
    assert seen[1].attrs == {"image": "hand-made", "status": "ACTIVE"}
    assert provider.cloud.add_untagged(OWNER, "vm", {}).uid != foreign.uid


def test_console_set_attr_and_remove(provider: FakeProvider) -> None:
    cloud = provider.cloud
    vm = Resource("vm/game", {"image": "i", "flavor": "m1.small", "ports": ()})
    made = provider.create(OWNER, vm)
    cloud.set_attr(OWNER, "vm/game", "flavor", "m1.large")
    cloud.set_attr(OWNER, made.uid, "ports", '["port/a"]')
    cloud.set_attr(OWNER, made.uid, "count", "3")
    attrs = provider.observe(OWNER)[0].attrs
    assert (attrs["flavor"], attrs["ports"], attrs["count"]) == ("m1.large", ("port/a",), 3)
    provider.create(OWNER, NET)
    provider.create(OWNER, SUBNET)
    cloud.remove(OWNER, "network/n")  # behind the engine's back, dependents or not
    cloud.remove(OWNER, made.uid)
    assert [o.id for o in cloud.list_objects(OWNER)] == ["subnet/n"]
    with pytest.raises(NotFound):
        cloud.remove(OWNER, "vm/game")
    with pytest.raises(NotFound):
        cloud.set_attr("other", "subnet/n", "cidr", "10.9.0.0/24")
    assert cloud.violations() == []


def test_calls_are_counted(provider: FakeProvider) -> None:
    net = provider.create(OWNER, NET)
    provider.create(OWNER, NET)
    provider.update(OWNER, NET, net)
    provider.observe(OWNER)
    provider.delete(OWNER, net)
    assert provider.cloud.calls() == {"create": 2, "update": 1, "observe": 1, "delete": 1}


def test_threads_create_the_same_ids_once(provider: FakeProvider) -> None:
    seen: list[dict[str, str]] = []

    def run() -> None:
        seen.append(
            {f"n{i}": provider.create(OWNER, Resource(f"network/n{i}", {})).uid for i in range(50)}
        )

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 8 and all(s == seen[0] for s in seen)
    assert len(provider.observe(OWNER)) == 50


RACER = """
import sys
from pathlib import Path
from cloudlet.model.resources import Resource
from cloudlet.providers.fake import FakeProvider

provider = FakeProvider(Path(sys.argv[1]))
me = sys.argv[2]
sys.stdin.readline()
subnet = {"network": "network/shared", "cidr": "10.1.0.0/16"}
wanted = [Resource("network/shared", {}), Resource("subnet/shared", subnet, ["network/shared"])]
for i in range(30):
    wanted.append(Resource(f"network/n{i}", {}))
    wanted.append(Resource(f"port/{me}.{i}", {"subnet": "subnet/shared"}, ["subnet/shared"]))
for r in wanted:
    print(r.id, provider.create("race", r).uid)
"""


def test_processes_create_the_same_ids_once(tmp_path: Path) -> None:
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(tmp_path), f"p{i}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    outputs = [r.communicate("go\n", timeout=60)[0] for r in racers]
    assert [r.returncode for r in racers] == [0, 0, 0]
    answers = [dict(line.split() for line in out.splitlines()) for out in outputs]
    shared = [k for k in answers[0] if not k.startswith("port/")]
    assert all(a[k] == answers[0][k] for a in answers for k in shared)
    objects = FakeCloud.for_state_dir(tmp_path).list_objects("race")
    assert Counter(o.id for o in objects) == Counter({k: 1 for a in answers for k in a})
    addresses = [o.attrs["address"] for o in objects if o.kind == "port"]
    assert len(addresses) == 90 == len(set(addresses))


def test_ten_thousand_concurrent_creates_are_all_observed(provider: FakeProvider) -> None:
    """Ten threads creating at once lose nothing and duplicate nothing (how
    fast this is belongs to bench/run.py's 10,000-resource sync, not here)."""
    provider.create(OWNER, NET)
    provider.create(OWNER, Resource("subnet/n", {"network": "network/n", "cidr": "10.0.0.0/16"}))

    def run(t: int) -> None:
        for i in range(1000):
            r = port(f"{t}.{i}") if i % 2 else Resource(f"security-group/{t}.{i}", {"rules": ()})
            provider.create(OWNER, r)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    observed = provider.observe(OWNER)
    assert len(observed) == 10_002
    assert len({o.id for o in observed}) == 10_002
