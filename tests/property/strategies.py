"""Hypothesis strategies for valid cloudlet specs and for edits of them."""

from __future__ import annotations

import attrs
from hypothesis import strategies as st

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
from cloudlet.model.validate import validate

IMAGES = ["img-a", "img-b", "img-c"]
FLAVORS = ["m1.small", "m1.medium", "m1.large"]
SHARED_PORTS = [80, 443]


@st.composite
def cloudlets(draw: st.DrawFn, name: str = "prop") -> Cloudlet:
    n_nets = draw(st.integers(1, 3))
    blocks = draw(st.lists(st.integers(0, 50), min_size=n_nets, max_size=n_nets, unique=True))
    nets = [Network(f"net-{i}", f"10.{b}.0.0/24") for i, b in enumerate(blocks)]
    names = [n.name for n in nets]
    groups = [
        SecurityGroup(
            "web",
            [
                Rule(ports=p)
                for p in draw(
                    st.lists(st.sampled_from(["80", "443", "8000-8100"]), max_size=2, unique=True)
                )
            ],
        )
    ]
    lbs = [
        LoadBalancer(
            f"lb-{i}",
            draw(st.sampled_from(names)),
            type=draw(st.sampled_from(["shared", "dedicated"])),
            redundancy=draw(st.sampled_from(["none", "vip"])),
            security_groups=draw(st.sampled_from([[], ["web"]])),
        )
        for i in range(draw(st.integers(0, 2)))
    ]
    counter = iter(range(8000, 9000))

    def expose() -> Expose | None:
        if not lbs or not draw(st.booleans()):
            return None
        lb = draw(st.sampled_from(lbs))
        port = draw(st.sampled_from(SHARED_PORTS)) if lb.type == "shared" else next(counter)
        return Expose(lb.name, [PortSpec(port)])

    clusters = [
        Cluster(
            f"k-{i}",
            draw(st.sampled_from(names)),
            masters=draw(st.integers(1, 2)),
            workers=draw(st.integers(0, 3)),
            vip=draw(st.booleans()),
            flavor=draw(st.sampled_from(FLAVORS)),
            expose=expose(),
        )
        for i in range(draw(st.integers(0, 2)))
    ]
    vms = [
        Vm(
            f"vm-{i}",
            draw(st.sampled_from(names)),
            image=draw(st.sampled_from(IMAGES)),
            flavor=draw(st.sampled_from(FLAVORS)),
            expose=expose(),
            security_groups=draw(st.sampled_from([[], ["web"]])),
        )
        for i in range(draw(st.integers(0, 5)))
    ]
    spec = CloudletSpec(
        data_path=draw(st.sampled_from(["no-router", "router", "floating-ip"])),
        networks=nets,
        security_groups=groups,
        load_balancers=lbs,
        clusters=clusters,
        vms=vms,
    )
    cloudlet = Cloudlet("cloudlet/v1", "Cloudlet", Metadata(name), spec)
    assert validate(cloudlet) == [], validate(cloudlet)
    return cloudlet


def _replace_spec(c: Cloudlet, **changes: object) -> Cloudlet:
    return attrs.evolve(c, spec=attrs.evolve(c.spec, **changes))


@st.composite
def edits(draw: st.DrawFn, c: Cloudlet) -> Cloudlet:
    """One small, valid edit of ``c`` (or a whole new spec, rarely)."""
    spec = c.spec
    choice = draw(
        st.sampled_from(
            ["add_vm", "drop_vm", "vm_image", "vm_flavor", "cidr", "workers", "vip", "new"]
        )
    )
    shared = [lb for lb in spec.load_balancers if lb.type == "shared"]
    if choice == "add_vm":
        used = {v.name for v in spec.vms}
        name = next(f"vm-{i}" for i in range(100) if f"vm-{i}" not in used)
        expose = (
            Expose(
                draw(st.sampled_from(shared)).name, [PortSpec(draw(st.sampled_from(SHARED_PORTS)))]
            )
            if shared
            else None
        )
        vm = Vm(name, spec.networks[0].name, image="img-a", expose=expose)
        return _replace_spec(c, vms=[*spec.vms, vm])
    if choice == "drop_vm" and spec.vms:
        i = draw(st.integers(0, len(spec.vms) - 1))
        return _replace_spec(c, vms=spec.vms[:i] + spec.vms[i + 1 :])
    if choice in ("vm_image", "vm_flavor") and spec.vms:
        i = draw(st.integers(0, len(spec.vms) - 1))
        field = "image" if choice == "vm_image" else "flavor"
        value = draw(st.sampled_from(IMAGES if field == "image" else FLAVORS))
        vms = list(spec.vms)
        vms[i] = attrs.evolve(vms[i], **{field: value})
        return _replace_spec(c, vms=vms)
    if choice == "cidr":
        used = {n.cidr for n in spec.networks}
        free = [f"10.{b}.0.0/24" for b in range(51, 60) if f"10.{b}.0.0/24" not in used]
        nets = list(spec.networks)
        i = draw(st.integers(0, len(nets) - 1))
        nets[i] = attrs.evolve(nets[i], cidr=draw(st.sampled_from(free)))
        return _replace_spec(c, networks=nets)
    if choice in ("workers", "vip") and spec.clusters:
        i = draw(st.integers(0, len(spec.clusters) - 1))
        cl = list(spec.clusters)
        cl[i] = (
            attrs.evolve(cl[i], workers=draw(st.integers(0, 3)))
            if choice == "workers"
            else attrs.evolve(cl[i], vip=not cl[i].vip)
        )
        return _replace_spec(c, clusters=cl)
    if choice == "new":
        return draw(cloudlets(c.name))
    return c
