"""Generated cloudlet specs of a chosen size, for benchmarks and stress tests."""

from __future__ import annotations

import ipaddress

from cloudlet.model.spec import (
    Cloudlet,
    CloudletSpec,
    Cluster,
    Expose,
    LoadBalancer,
    Metadata,
    Network,
    PortSpec,
    Rule,
    SecurityGroup,
    Vm,
)


def generated(
    name: str,
    *,
    networks: int,
    clusters: int,
    nodes: int,
    vms: int,
    lbs: int = 4,
    data_path: str = "no-router",
) -> Cloudlet:
    """``clusters`` clusters of ``nodes`` nodes (1 master) with VIPs, ``vms``
    VMs exposed on 443 across ``lbs`` shared LBs (so most ports are remapped)."""
    base = ipaddress.ip_network("10.0.0.0/8")
    subnets = list(base.subnets(new_prefix=22))[:networks]
    nets = [Network(f"net-{i}", str(s)) for i, s in enumerate(subnets)]
    balancers = [
        LoadBalancer(f"lb-{i}", nets[i % networks].name, security_groups=["web"])
        for i in range(lbs)
    ]
    groups = [SecurityGroup("web", [Rule(ports="443"), Rule(ports="80")])]
    cls = [
        Cluster(
            f"k-{i}",
            nets[i % networks].name,
            masters=1,
            workers=nodes - 1,
            vip=True,
            expose=Expose(f"lb-{i % lbs}", [PortSpec(6443)]),
        )
        for i in range(clusters)
    ]
    machines = [
        Vm(
            f"vm-{i}",
            nets[i % networks].name,
            image=f"app-{i % 7}",
            expose=Expose(f"lb-{i % lbs}", [PortSpec(443)]),
        )
        for i in range(vms)
    ]
    spec = CloudletSpec(
        data_path=data_path,
        networks=nets,
        security_groups=groups,  # type: ignore[arg-type]
        load_balancers=balancers,
        clusters=cls,
        vms=machines,
    )
    return Cloudlet("cloudlet/v1", "Cloudlet", Metadata(name), spec)


def large() -> Cloudlet:
    """About 10,000 resources: 40 networks, 40 clusters of 41 nodes, 1,800 VMs."""
    return generated("bench-10k", networks=40, clusters=40, nodes=41, vms=1800)


def medium() -> Cloudlet:
    """About 500 resources."""
    return generated("bench-500", networks=4, clusters=4, nodes=11, vms=110, lbs=2)


#: Resources one ``sized`` cluster (40 nodes: port, VM and k8s node each,
#: a VIP and a listener) and one exposed VM (port, VM, listener) expand to.
CLUSTER_RESOURCES, VM_RESOURCES, VMS_PER_CLUSTER = 122, 3, 5


def sized(resources: int) -> Cloudlet:
    """About ``resources`` resources in the same mix at every size (about
    90 % cluster nodes, the rest exposed VMs, a network per 250 resources,
    a shared LB per 2,500), so that figures at different sizes compare.
    Cluster-heavy because a cluster is many resources from a few lines: the
    100k spec stays under the loader's node budget (``MAX_NODES``)."""
    unit = CLUSTER_RESOURCES + VMS_PER_CLUSTER * VM_RESOURCES
    clusters = max(1, round(resources / unit))
    networks = max(1, resources // 250)
    lbs = max(2, resources // 2500)
    rest = resources - clusters * CLUSTER_RESOURCES - 2 * networks - 4 * lbs - 1
    return generated(
        f"scale-{resources}",
        networks=networks,
        clusters=clusters,
        nodes=40,
        vms=max(0, rest // VM_RESOURCES),
        lbs=lbs,
    )
