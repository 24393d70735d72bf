from __future__ import annotations

import pytest
from helpers import cloudlet

from cloudlet.model.expand import EXTERNAL, expand
from cloudlet.model.spec import Cluster, LoadBalancer, Vm


def ids(c):
    return {r.id for r in expand(c).resources}


def test_same_spec_same_resources():
    assert expand(cloudlet()) == expand(cloudlet())


def test_named_objects_keep_their_names_and_derived_ones_use_dots():
    got = ids(cloudlet())
    for rid in (
        "network/internal",
        "subnet/internal",
        "lb/root",
        "vm/game",
        "vm/root.0",
        "vm/apps.worker.1",
        "k8s-node/apps.worker.1",
        "vip/apps",
        "lb-listener/root.game.tcp.443",
        "security-group/web",
    ):
        assert rid in got


def test_every_dependency_is_a_resource_of_the_expansion():
    for path in ("no-router", "router", "floating-ip"):
        res = expand(cloudlet(path)).by_id()
        for r in res.values():
            assert set(r.deps) <= set(res), (r.id, set(r.deps) - set(res))


def test_no_router_lb_has_external_and_internal_legs():
    res = expand(cloudlet("no-router")).by_id()
    assert res["port/root.0.ext"].attrs["network"] == EXTERNAL
    assert res["port/root.0.int"].attrs["subnet"] == "subnet/internal"
    assert res["vm/root.0"].attrs["ports"] == ("port/root.0.ext", "port/root.0.int")
    assert not any(r.startswith("router/") for r in res)


def test_router_path_has_router_and_only_external_leg():
    res = expand(cloudlet("router")).by_id()
    assert res["router/berlin-1"].attrs["interfaces"] == ("subnet/internal",)
    assert "port/root.0.int" not in res
    assert res["vm/root.0"].attrs["ports"] == ("port/root.0.ext",)


def test_floating_ip_path_puts_lb_on_translated_subnet_with_floating_ip():
    res = expand(cloudlet("floating-ip")).by_id()
    assert res["subnet/berlin-1.lb"].attrs["cidr"] == "192.168.255.0/24"
    assert res["port/root.0.fip"].attrs["subnet"] == "subnet/berlin-1.lb"
    assert res["floating-ip/root"].attrs["target"] == "port/root.0.fip"
    assert "router/berlin-1" in res["floating-ip/root"].deps
    assert res["lb/root"].attrs["address"] == "floating-ip/root"


def test_vip_redundancy_makes_two_members_sharing_a_vip():
    c = cloudlet(load_balancers=[LoadBalancer("root", "internal", redundancy="vip")])
    res = expand(c).by_id()
    assert res["lb/root"].attrs["members"] == ("vm/root.0", "vm/root.1")
    for i in (0, 1):
        assert res[f"port/root.{i}.ext"].attrs["allowedAddressPairs"] == ("vip/root",)
    assert res["lb/root"].attrs["address"] == "vip/root"


def test_cluster_workers_join_after_first_master_and_share_the_vip():
    c = cloudlet(clusters=[Cluster("apps", "internal", masters=3, workers=2, vip=True)], vms=[])
    res = expand(c).by_id()
    assert res["k8s-node/apps.master.0"].deps == ("vm/apps.master.0",)
    for node in ("master.1", "master.2", "worker.0", "worker.1"):
        assert "k8s-node/apps.master.0" in res[f"k8s-node/apps.{node}"].deps
        assert res[f"port/apps.{node}"].attrs["allowedAddressPairs"] == ("vip/apps",)


def test_shared_lb_remaps_colliding_port_and_dedicated_does_not():
    c = cloudlet()
    e = expand(c)
    by_target = {m.target: m.public_port for m in e.port_mappings}
    assert by_target == {"apps": 443, "game": 10000}
    res = e.by_id()
    assert res["lb-listener/root.game.tcp.443"].attrs["publicPort"] == 10000
    assert res["lb-listener/root.apps.tcp.443"].attrs["targets"] == (
        "vm/apps.worker.0",
        "vm/apps.worker.1",
    )


@pytest.mark.parametrize("path", ["no-router", "router", "floating-ip"])
def test_defaults_fill_image_and_flavor(path):
    c = cloudlet(path, vms=[Vm("plain", "internal")])
    vm = expand(c).by_id()["vm/plain"]
    assert (vm.attrs["image"], vm.attrs["flavor"]) == ("ubuntu-22.04", "m1.medium")


def test_drift_policy_is_per_object_and_reaches_what_it_expands_to():
    import attrs as _attrs

    c = cloudlet(
        vms=[
            Vm(
                "game",
                "internal",
                drift_policy="report",
                expose=_attrs.evolve(cloudlet().spec.vms[0].expose),
            )
        ]
    )
    res = expand(c).by_id()
    for rid in ("vm/game", "port/game", "lb-listener/root.game.tcp.443"):
        assert res[rid].policy == "report", rid
    assert res["vm/root.0"].policy == "heal"
    everything = _attrs.evolve(c, spec=_attrs.evolve(c.spec, drift_policy="report"))
    res = expand(everything).by_id()
    assert res["subnet/internal"].policy == "report"
    assert res["vm/apps.worker.0"].policy == "report"


def test_each_resource_takes_the_drift_policy_of_the_spec_object_it_comes_from():
    import attrs as _attrs

    def report(objs):
        return [_attrs.evolve(o, drift_policy="report") for o in objs]

    c = cloudlet()
    spec = _attrs.evolve(
        c.spec,
        networks=report(c.spec.networks),
        security_groups=report(c.spec.security_groups),
        load_balancers=report(c.spec.load_balancers),
        clusters=report(c.spec.clusters),
    )
    res = expand(_attrs.evolve(c, spec=spec)).by_id()
    heal = {"vm/game", "port/game", "lb-listener/root.game.tcp.443"}
    assert heal <= set(res)
    for rid, r in res.items():
        assert r.policy == ("heal" if rid in heal else "report"), rid


class _Walked(list):
    """The spec's clusters, counting how often expansion walks them."""

    walks = 0

    def __iter__(self):
        self.walks += 1
        return super().__iter__()


def test_listeners_find_their_cluster_without_walking_every_cluster():
    """Issue 13: each listener scanned the clusters for its target, so
    expansion grew with listeners x clusters. Counted, not timed: 40
    exposed clusters and 40 exposed VMs walk the cluster list a fixed
    number of times."""
    import attrs as _attrs

    from cloudlet.model.spec import Expose, PortSpec

    c = cloudlet()
    exposed = Expose("root", [PortSpec(6443)])
    clusters = _Walked(Cluster(f"k{i}", "internal", 1, 1, expose=exposed) for i in range(40))
    vms = [Vm(f"v{i}", "internal", expose=Expose("root", [PortSpec(443)])) for i in range(40)]
    spec = _attrs.evolve(c.spec, clusters=clusters, vms=vms)
    res = expand(_attrs.evolve(c, spec=spec)).by_id()
    assert res["lb-listener/root.k7.tcp.6443"].attrs["targets"] == ("vm/k7.worker.0",)
    assert res["lb-listener/root.v7.tcp.443"].attrs["targets"] == ("vm/v7",)
    assert clusters.walks <= 4
