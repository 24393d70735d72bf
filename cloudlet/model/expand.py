"""Expansion: one cloudlet spec becomes a flat, deterministic set of resources.

This is the CRM's job in the cloudlet architecture: infrastructure-independent
intent (an app exposed on the root LB, a cluster with a VIP) becomes the
concrete objects every orchestrator understands. Names are derived, never
random, so the same spec always yields the same ids; that is what lets a
crashed run find its objects again by tag. The catalogue is in
docs/resources.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs

from cloudlet.model.kinds import EXTERNAL
from cloudlet.model.ports import PortMapping, allocate_ports
from cloudlet.model.resources import AttrValue, Resource
from cloudlet.model.spec import Cloudlet, Cluster, LoadBalancer, Rule, Vm


@attrs.frozen
class Expansion:
    cloudlet: str
    resources: tuple[Resource, ...]
    port_mappings: tuple[PortMapping, ...]

    def by_id(self) -> dict[str, Resource]:
        return {r.id: r for r in self.resources}


class _Builder:
    """Collects resources; one small method per topology piece."""

    def __init__(self, cloudlet: Cloudlet) -> None:
        self.cloudlet = cloudlet
        self.spec = cloudlet.spec
        self.out: dict[str, Resource] = {}
        #: By name, for the listeners: a scan per listener was quadratic (issue 13).
        self.clusters = {c.name: c for c in cloudlet.spec.clusters}

    def policy_of(self, own: str | None) -> str:
        """An object's own drift policy, else the cloudlet's."""
        return own or self.spec.drift_policy

    def add(self, rid: str, deps: Iterable[str] = (), *, policy: str, **values: AttrValue) -> str:
        """One resource; ``policy`` is the drift policy of the spec object it comes from."""
        self.out[rid] = Resource(rid, values, tuple(deps), policy)
        return rid

    def image(self, own: str | None) -> str:
        return own or self.spec.defaults.image

    def flavor(self, own: str | None) -> str:
        return own or self.spec.defaults.flavor

    def groups(self, names: Sequence[str]) -> tuple[str, ...]:
        return tuple(sorted({f"security-group/{n}" for n in names}))

    def port(
        self,
        name: str,
        on: str,
        policy: str,
        groups: tuple[str, ...] = (),
        vips: tuple[str, ...] = (),
    ) -> str:
        deps = [d for d in (on,) if d != EXTERNAL] + list(groups) + list(vips)
        return self.add(
            f"port/{name}",
            deps,
            policy=policy,
            **_where_on(on),
            securityGroups=groups,
            allowedAddressPairs=vips,
        )

    def vm(self, name: str, ports: tuple[str, ...], image: str, flavor: str, policy: str) -> str:
        return self.add(f"vm/{name}", ports, policy=policy, image=image, flavor=flavor, ports=ports)


def _where_on(on: str) -> dict[str, AttrValue]:
    """Where a port or VIP sits: the external network, or one of the cloudlet's subnets."""
    return {"network": EXTERNAL} if on == EXTERNAL else {"subnet": on}


def rule_text(rule: Rule) -> str:
    return f"{rule.direction} {rule.protocol} {rule.ports or '-'} {rule.remote}"


#: What a group allows out when its spec lists no egress rule, as Neutron's
#: and Heat's groups do: spelled out, so every provider holds exactly the
#: rules the model lists and an operator sees them in the plan.
DEFAULT_EGRESS = ("egress any - 0.0.0.0/0", "egress any - ::/0")


def group_rules(rules: Sequence[Rule]) -> tuple[str, ...]:
    """A group's rules as a set (sorted, no repeats): their order means nothing."""
    texts = {rule_text(r) for r in rules}
    if not any(r.direction == "egress" for r in rules):
        texts.update(DEFAULT_EGRESS)
    return tuple(sorted(texts))


def _network(b: _Builder, name: str, cidr: str, policy: str) -> None:
    net = b.add(f"network/{name}", policy=policy)
    b.add(f"subnet/{name}", [net], policy=policy, network=net, cidr=cidr)


def _networks(b: _Builder) -> None:
    for net in b.spec.networks:
        _network(b, net.name, net.cidr, b.policy_of(net.drift_policy))
    policy = b.spec.drift_policy
    if b.spec.data_path == "floating-ip":
        _network(b, f"{b.cloudlet.name}.lb", b.spec.lb_subnet, policy)
    if b.spec.data_path in ("router", "floating-ip"):
        subnets = tuple(sorted(r for r in b.out if r.startswith("subnet/")))
        b.add(
            f"router/{b.cloudlet.name}", subnets, policy=policy, external=True, interfaces=subnets
        )
    for group in b.spec.security_groups:
        b.add(
            f"security-group/{group.name}",
            policy=b.policy_of(group.drift_policy),
            rules=group_rules(group.rules),
        )


def _lb_public_leg(
    b: _Builder, lb: LoadBalancer, i: int, vips: tuple[str, ...], policy: str
) -> str:
    groups = b.groups(lb.security_groups)
    if b.spec.data_path == "floating-ip":
        return b.port(f"{lb.name}.{i}.fip", f"subnet/{b.cloudlet.name}.lb", policy, groups, vips)
    return b.port(f"{lb.name}.{i}.ext", EXTERNAL, policy, groups, vips)


def _load_balancer(b: _Builder, lb: LoadBalancer) -> None:
    path = b.spec.data_path
    policy = b.policy_of(lb.drift_policy)
    vips: tuple[str, ...] = ()
    if lb.redundancy == "vip":
        on = f"subnet/{b.cloudlet.name}.lb" if path == "floating-ip" else EXTERNAL
        deps = [on] if on != EXTERNAL else []
        vips = (b.add(f"vip/{lb.name}", deps, policy=policy, **_where_on(on)),)
    members: list[str] = []
    first_leg = ""
    for i in range(2 if lb.redundancy == "vip" else 1):
        legs = [_lb_public_leg(b, lb, i, vips, policy)]
        first_leg = first_leg or legs[0]
        if path == "no-router":
            legs.append(b.port(f"{lb.name}.{i}.int", f"subnet/{lb.network}", policy))
        image, flavor = b.image(lb.image), b.flavor(lb.flavor)
        members.append(b.vm(f"{lb.name}.{i}", tuple(legs), image, flavor, policy))
    address = vips[0] if vips else first_leg
    if path == "floating-ip":
        address = b.add(
            f"floating-ip/{lb.name}",
            [address, f"router/{b.cloudlet.name}"],
            policy=policy,
            target=address,
        )
    b.add(
        f"lb/{lb.name}",
        [*members, address],
        policy=policy,
        type=lb.type,
        redundancy=lb.redundancy,
        members=tuple(members),
        address=address,
    )


def _cluster(b: _Builder, cluster: Cluster) -> None:
    subnet = f"subnet/{cluster.network}"
    policy = b.policy_of(cluster.drift_policy)
    vips: tuple[str, ...] = ()
    if cluster.vip:
        vips = (b.add(f"vip/{cluster.name}", [subnet], policy=policy, subnet=subnet),)
    groups = b.groups(cluster.security_groups)
    first = f"k8s-node/{cluster.name}.master.0"
    roles = [("master", i) for i in range(cluster.masters)]
    roles += [("worker", i) for i in range(cluster.workers)]
    image, flavor = b.image(cluster.image), b.flavor(cluster.flavor)
    for role, i in roles:
        node = f"{cluster.name}.{role}.{i}"
        port = b.port(node, subnet, policy, groups, vips)
        vm = b.vm(node, (port,), image, flavor, policy)
        deps = [vm] if f"k8s-node/{node}" == first else [vm, first]
        b.add(f"k8s-node/{node}", deps, policy=policy, cluster=cluster.name, role=role, vm=vm)


def _vm(b: _Builder, vm: Vm) -> None:
    policy = b.policy_of(vm.drift_policy)
    port = b.port(vm.name, f"subnet/{vm.network}", policy, b.groups(vm.security_groups))
    b.vm(vm.name, (port,), b.image(vm.image), b.flavor(vm.flavor), policy)


def _targets(b: _Builder, target: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The VMs a listener forwards to, and what must be ready before it."""
    cluster = b.clusters.get(target)
    if cluster is None:
        return (f"vm/{target}",), (f"vm/{target}",)
    role, count = ("worker", cluster.workers) if cluster.workers else ("master", cluster.masters)
    nodes = [f"{target}.{role}.{i}" for i in range(count)]
    vms = tuple(f"vm/{n}" for n in nodes)
    return vms, vms + tuple(f"k8s-node/{n}" for n in nodes)


def _listeners(b: _Builder, mappings: Sequence[PortMapping]) -> None:
    for m in mappings:
        targets, ready = _targets(b, m.target)
        name = f"{m.load_balancer}.{m.target}.{m.protocol}.{m.port}"
        b.add(
            f"lb-listener/{name}",
            [f"lb/{m.load_balancer}", *ready],
            policy=b.out[targets[0]].policy,  # a listener is part of what it exposes
            protocol=m.protocol,
            port=m.port,
            publicPort=m.public_port,
            targets=targets,
        )


def expand(cloudlet: Cloudlet, previous_ports: Iterable[PortMapping] = ()) -> Expansion:
    """Every resource the cloudlet needs, sorted by id, plus its port mappings."""
    b = _Builder(cloudlet)
    _networks(b)
    for lb in cloudlet.spec.load_balancers:
        _load_balancer(b, lb)
    for cluster in cloudlet.spec.clusters:
        _cluster(b, cluster)
    for vm in cloudlet.spec.vms:
        _vm(b, vm)
    mappings = allocate_ports(cloudlet, previous_ports)
    _listeners(b, mappings)
    resources = tuple(b.out[k] for k in sorted(b.out))
    return Expansion(cloudlet.name, resources, mappings)
