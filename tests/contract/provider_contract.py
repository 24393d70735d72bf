"""The provider contract: what every orchestrator binding must do.

The engine relies on these properties and nothing else, so the same suite
runs against the fake cloud now and against OpenStack and vSphere later.
A provider's test module binds the cases to a ``Test...`` name, either by
subclassing ``ProviderContract`` (setting a static ``make_provider`` and
``caps``) or with the factory, which returns such a class:

    TestFakeContract = provider_contract_tests(make_fake_harness, caps=Capabilities())

``make_provider()`` returns a fresh harness per test; the harness owns its
backing store and releases it in ``close()``.

Every test works under fresh, random owners and deletes what it made, so
the suite can run against a shared real cloud.
"""

from __future__ import annotations

import contextlib
import ipaddress
import uuid
from collections.abc import Callable, Iterator
from typing import Protocol

import attrs
import pytest

from cloudlet.errors import ProviderError
from cloudlet.model.kinds import KINDS
from cloudlet.model.resources import Observed, Resource
from cloudlet.providers.base import Provider

SG = "security-group/web"
#: The resource of each kind that the per-kind lifecycle test exercises.
TARGETS: dict[str, str] = {
    "network": "network/n",
    "subnet": "subnet/n",
    "router": "router/r",
    "security-group": SG,
    "vip": "vip/lb",
    "port": "port/game",
    "vm": "vm/game",
    "floating-ip": "floating-ip/lb",
    "k8s-node": "k8s-node/apps.master.0",
    "lb": "lb/lb",
    "lb-listener": "lb-listener/lb.game.tcp.443",
}
COMPUTED_ADDRESS = ("port", "vip", "floating-ip")


class ContractHarness(Protocol):
    """A provider plus the out-of-band hooks an operator's console gives."""

    provider: Provider

    def reopen(self) -> Provider:
        """A new provider instance on the same backing store (as after a crash)."""
        ...

    def remove(self, owner: str, uid: str) -> None:
        """Delete an object behind the engine's back."""
        ...

    def set_attr(self, owner: str, uid: str, key: str, value: str) -> None:
        """Change an attribute behind the engine's back (``value`` JSON or plain)."""
        ...

    def close(self) -> None: ...


class Console(Protocol):
    """An operator's hands on the cloud, beside the provider."""

    def remove(self, owner: str, uid: str, /) -> object: ...

    def set_attr(self, owner: str, uid: str, key: str, value: str, /) -> object: ...

    def close(self) -> None: ...


class ProviderHarness:
    """The usual ContractHarness: providers from ``open_provider`` (every one
    closed at the end) and a console on the same cloud."""

    def __init__(self, open_provider: Callable[[], Provider], console: Console) -> None:
        self._open = open_provider
        self.provider = open_provider()
        self.console = console
        self._opened = [self.provider]

    def reopen(self) -> Provider:
        self._opened.append(self._open())
        return self._opened[-1]

    def remove(self, owner: str, uid: str) -> None:
        self.console.remove(owner, uid)

    def set_attr(self, owner: str, uid: str, key: str, value: str) -> None:
        self.console.set_attr(owner, uid, key, value)

    def close(self) -> None:
        for provider in self._opened:
            provider.close()
        self.console.close()


@attrs.frozen
class Capabilities:
    """What the cloud under test offers, and names valid on it."""

    supports_router: bool = True
    supports_floating_ip: bool = True
    supports_external_network: bool = True
    image: str = "ubuntu-22.04"
    flavor: str = "m1.small"
    other_flavor: str = "m1.medium"
    cidr: str = "10.213.0.0/24"
    other_cidr: str = "10.213.1.0/24"


def _port(name: str, *, groups: tuple[str, ...] = (), pairs: tuple[str, ...] = ()) -> Resource:
    attrs_ = {"subnet": "subnet/n", "securityGroups": groups, "allowedAddressPairs": pairs}
    return Resource(f"port/{name}", attrs_, ["subnet/n", *groups, *pairs])


def _vm(name: str, image: str, flavor: str, ports: tuple[str, ...]) -> Resource:
    return Resource(f"vm/{name}", {"image": image, "flavor": flavor, "ports": ports}, ports)


def sample_resources(caps: Capabilities) -> list[Resource]:
    """A small valid cloudlet with every kind, in dependency order."""
    fip = caps.supports_router and caps.supports_floating_ip
    lb_ports = ("port/lb.0.int", "port/lb.0.ext") if caps.supports_external_network else ()
    out = [
        Resource("network/n", {}),
        Resource("network/m", {}),
        Resource("subnet/n", {"network": "network/n", "cidr": caps.cidr}, ["network/n"]),
        Resource("subnet/m", {"network": "network/m", "cidr": caps.other_cidr}, ["network/m"]),
        Resource("router/r", {"external": True, "interfaces": ("subnet/n",)}, ["subnet/n"]),
        Resource(SG, {"rules": ("ingress tcp 443 0.0.0.0/0",)}),
        Resource("vip/lb", {"subnet": "subnet/n"}, ["subnet/n"]),
        _port("lb.0.int", groups=(SG,), pairs=("vip/lb",)),
        Resource(
            "port/lb.0.ext",
            {"network": "@external", "securityGroups": (SG,), "allowedAddressPairs": ()},
            [SG],
        ),
        _port("game"),
        _port("apps.master.0"),
        _vm("lb.0", caps.image, caps.flavor, lb_ports or ("port/lb.0.int",)),
        _vm("game", caps.image, caps.flavor, ("port/game",)),
        _vm("apps.master.0", caps.image, caps.flavor, ("port/apps.master.0",)),
        Resource("floating-ip/lb", {"target": "vip/lb"}, ["vip/lb", "router/r"]),
        Resource(
            "k8s-node/apps.master.0",
            {"cluster": "apps", "role": "master", "vm": "vm/apps.master.0"},
            ["vm/apps.master.0"],
        ),
        Resource(
            "lb/lb",
            {
                "type": "dedicated",
                "redundancy": "none",
                "members": ("vm/lb.0",),
                "address": "floating-ip/lb" if fip else "vip/lb",
            },
            ["vm/lb.0", "floating-ip/lb" if fip else "vip/lb"],
        ),
        Resource(
            "lb-listener/lb.game.tcp.443",
            {"protocol": "tcp", "port": 443, "publicPort": 443, "targets": ("vm/game",)},
            ["lb/lb", "vm/game"],
        ),
    ]
    dropped = set() if caps.supports_router else {"router/r", "floating-ip/lb"}
    dropped |= set() if fip else {"floating-ip/lb"}
    dropped |= set() if caps.supports_external_network else {"port/lb.0.ext"}
    return [r for r in out if r.id not in dropped]


def mutated(resource: Resource, caps: Capabilities) -> Resource:
    """The same resource with a mutable attribute changed (itself if it has none)."""
    a, deps = dict(resource.attrs), list(resource.deps)
    match resource.kind:
        case "router":
            a["interfaces"], deps = ("subnet/m", "subnet/n"), [*deps, "subnet/m"]
        case "security-group":
            rules = resource.attrs["rules"]
            assert isinstance(rules, tuple)
            a["rules"] = (*rules, "ingress tcp 80 0.0.0.0/0")
        case "port":
            a["securityGroups"], deps = (SG,), [*deps, SG]
        case "vm":
            a["flavor"] = caps.other_flavor
        case "floating-ip":
            a["target"], deps = "port/game", ["port/game", "router/r"]
        case "lb":
            a["members"], deps = ("vm/game", "vm/lb.0"), [*deps, "vm/game"]
        case "lb-listener":
            a["publicPort"] = 8443
    return Resource(resource.id, a, deps)


def closure(by_id: dict[str, Resource], roots: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        rid = todo.pop()
        if rid not in seen:
            seen.add(rid)
            todo.extend(by_id[rid].deps)
    return seen


def assert_matches(observed: Observed | None, resource: Resource) -> None:
    """Observed carries every desired attribute, the deps, and the computed ones."""
    assert observed is not None, f"{resource.id} not observed"
    assert (observed.id, observed.kind) == (resource.id, resource.kind)
    for key, value in resource.attrs.items():
        assert observed.attrs.get(key) == value, f"{resource.id}.{key}"
    assert observed.deps == resource.deps
    if resource.kind in COMPUTED_ADDRESS:
        ipaddress.ip_address(str(observed.attrs.get("address")))
    if resource.kind == "vm":
        assert observed.attrs.get("status") == "ACTIVE"


def cleanup(provider: Provider, owner: str) -> None:
    """Best effort, dependents first; what a test leaves would pollute a shared cloud."""
    for _ in range(len(KINDS) + 2):
        objects = provider.observe(owner)
        if not objects:
            return
        used = {dep for o in objects for dep in o.deps}
        for obj in objects:
            if obj.id not in used:
                with contextlib.suppress(ProviderError):
                    provider.delete(owner, obj)


class Context:
    """One test's harness, owners and helpers."""

    def __init__(self, harness: ContractHarness, caps: Capabilities) -> None:
        self.harness = harness
        self.caps = caps
        self.owners: list[str] = []
        self.owner = self.new_owner()
        self.sample = {r.id: r for r in sample_resources(caps)}

    @property
    def provider(self) -> Provider:
        return self.harness.provider

    def new_owner(self) -> str:
        self.owners.append(f"ct-{uuid.uuid4().hex[:10]}")
        return self.owners[-1]

    def create_all(self, ids: set[str], owner: str | None = None) -> dict[str, Observed]:
        """Create the sample's resources among ``ids``, in dependency order."""
        owner = owner or self.owner
        return {rid: self.provider.create(owner, r) for rid, r in self.sample.items() if rid in ids}

    def find(self, rid: str, owner: str | None = None) -> Observed | None:
        found = [o for o in self.provider.observe(owner or self.owner) if o.id == rid]
        assert len(found) <= 1, f"{rid} observed {len(found)} times"
        return found[0] if found else None


class ProviderContract:
    """The cases; a subclass sets ``make_provider`` (static) and ``caps``."""

    caps: Capabilities = Capabilities()

    @staticmethod
    def make_provider() -> ContractHarness:
        raise NotImplementedError

    @pytest.fixture
    def ctx(self) -> Iterator[Context]:
        harness = self.make_provider()
        ctx = Context(harness, self.caps)
        try:
            yield ctx
        finally:
            for owner in ctx.owners:
                cleanup(harness.provider, owner)
            harness.close()

    @pytest.mark.parametrize("kind", KINDS)
    def test_create_observe_update_delete(self, ctx: Context, kind: str) -> None:
        target = ctx.sample.get(TARGETS[kind])
        if target is None:
            pytest.skip(f"{kind} is not supported by this cloud")
        changed = mutated(target, self.caps)
        ctx.create_all(closure(ctx.sample, {*target.deps, *changed.deps}))
        created = ctx.provider.create(ctx.owner, target)
        assert_matches(created, target)
        seen = ctx.find(target.id)
        assert_matches(seen, target)
        assert seen is not None and seen.uid == created.uid
        # a change the provider makes in place needs no replacement (growing a VM)
        assert ctx.provider.replacement_reason(changed, seen) is None
        updated = ctx.provider.update(ctx.owner, changed, seen)
        assert updated.uid == created.uid
        assert_matches(updated, changed)
        assert_matches(ctx.find(target.id), changed)
        ctx.provider.delete(ctx.owner, updated)
        assert ctx.find(target.id) is None

    def test_create_is_idempotent(self, ctx: Context) -> None:
        net = ctx.sample["network/n"]
        first = ctx.provider.create(ctx.owner, net)
        second = ctx.provider.create(ctx.owner, net)
        assert second.uid == first.uid
        assert [o.uid for o in ctx.provider.observe(ctx.owner)] == [first.uid]

    def test_delete_of_deleted_object_succeeds(self, ctx: Context) -> None:
        net = ctx.provider.create(ctx.owner, ctx.sample["network/n"])
        ctx.provider.delete(ctx.owner, net)
        ctx.provider.delete(ctx.owner, net)
        assert ctx.provider.observe(ctx.owner) == []

    def test_delete_after_out_of_band_removal_succeeds(self, ctx: Context) -> None:
        net = ctx.provider.create(ctx.owner, ctx.sample["network/n"])
        ctx.harness.remove(ctx.owner, net.uid)
        assert ctx.find("network/n") is None
        ctx.provider.delete(ctx.owner, net)

    def test_out_of_band_change_is_observed(self, ctx: Context) -> None:
        sg = ctx.provider.create(ctx.owner, ctx.sample[SG])
        ctx.harness.set_attr(ctx.owner, sg.uid, "rules", '["ingress tcp 22 0.0.0.0/0"]')
        seen = ctx.find(SG)
        assert seen is not None and seen.attrs["rules"] == ("ingress tcp 22 0.0.0.0/0",)

    def test_update_of_immutable_attr_is_refused(self, ctx: Context) -> None:
        made = ctx.create_all(closure(ctx.sample, {"vm/game"}))
        vm = ctx.sample["vm/game"]
        other = Resource(vm.id, {**vm.attrs, "image": f"{self.caps.image}-other"}, vm.deps)
        with pytest.raises(ProviderError) as err:
            ctx.provider.update(ctx.owner, other, made["vm/game"])
        assert not err.value.transient
        assert_matches(ctx.find("vm/game"), vm)

    def test_update_of_missing_object_fails_permanently(self, ctx: Context) -> None:
        sg = ctx.provider.create(ctx.owner, ctx.sample[SG])
        ctx.harness.remove(ctx.owner, sg.uid)
        with pytest.raises(ProviderError) as err:
            ctx.provider.update(ctx.owner, mutated(ctx.sample[SG], self.caps), sg)
        assert not err.value.transient

    def test_owners_are_isolated(self, ctx: Context) -> None:
        other = ctx.new_owner()
        mine = ctx.provider.create(ctx.owner, ctx.sample["network/n"])
        theirs = ctx.provider.create(other, ctx.sample["network/n"])
        assert mine.uid != theirs.uid
        assert [o.uid for o in ctx.provider.observe(ctx.owner)] == [mine.uid]
        assert [o.uid for o in ctx.provider.observe(other)] == [theirs.uid]
        ctx.provider.delete(other, theirs)
        assert [o.uid for o in ctx.provider.observe(ctx.owner)] == [mine.uid]
        assert ctx.provider.observe(f"ct-nobody-{uuid.uuid4().hex[:8]}") == []

    def test_adopts_after_crash(self, ctx: Context) -> None:
        made = ctx.create_all(closure(ctx.sample, {"subnet/n"}))
        fresh = ctx.harness.reopen()
        seen = {o.id: o.uid for o in fresh.observe(ctx.owner)}
        assert seen == {rid: o.uid for rid, o in made.items()}
        again = fresh.create(ctx.owner, ctx.sample["subnet/n"])
        assert again.uid == made["subnet/n"].uid
        assert len(fresh.observe(ctx.owner)) == len(made)

    def test_addresses_come_from_the_subnet_and_are_distinct(self, ctx: Context) -> None:
        ids = {"vip/lb", "port/game", "port/apps.master.0", "port/lb.0.int"}
        made = ctx.create_all(closure(ctx.sample, ids))
        net = ipaddress.ip_network(self.caps.cidr)
        reserved = {net.network_address, net.network_address + 1, net.broadcast_address}
        addresses = [ipaddress.ip_address(str(made[i].attrs["address"])) for i in ids]
        assert len(set(addresses)) == len(ids)
        assert all(a in net and a not in reserved for a in addresses)
        observed = {o.id: o.attrs.get("address") for o in ctx.provider.observe(ctx.owner)}
        assert {i: str(made[i].attrs["address"]) for i in ids} == {i: observed[i] for i in ids}

    def test_external_port_gets_an_address_outside_the_subnet(self, ctx: Context) -> None:
        if not self.caps.supports_external_network:
            pytest.skip("no external network")
        made = ctx.create_all(closure(ctx.sample, {"port/lb.0.ext"}))
        address = ipaddress.ip_address(str(made["port/lb.0.ext"].attrs["address"]))
        assert address not in ipaddress.ip_network(self.caps.cidr)


def provider_contract_tests(
    make_provider: Callable[[], ContractHarness], *, caps: Capabilities
) -> type:
    """The contract bound to one provider, for a module to name ``Test...``."""
    return type(
        "ProviderContractFor",
        (ProviderContract,),
        {"make_provider": staticmethod(make_provider), "caps": caps},
    )
