"""Each LB member's document from observed records, and its layout in cloud metadata."""

import pytest

from cloudlet.lb import members, placement
from cloudlet.lb.document import decode
from cloudlet.model.resources import Observed


def obs(rid, attrs, deps=()):
    return Observed(f"uid-{rid}", rid, rid.partition("/")[0], attrs, tuple(deps))


def port(name, address, *, pairs=(), external=False):
    where = {"network": "@external"} if external else {"subnet": "subnet/lb"}
    return obs(f"port/{name}", {**where, "address": address, "allowedAddressPairs": pairs})


def vm(name, *ports):
    return obs(f"vm/{name}", {"ports": tuple(f"port/{p}" for p in ports)})


LISTENER = {"protocol": "tcp", "port": 443, "publicPort": 8443, "targets": ("vm/app", "vm/new")}
UDP = {"protocol": "udp", "port": 53, "publicPort": 53, "targets": ("vm/app",)}


def cloudlet(redundancy="vip"):
    return [
        obs("subnet/lb", {"cidr": "10.9.0.0/24"}),
        obs("vip/edge", {"subnet": "subnet/lb", "address": "10.9.0.50"}),
        obs("floating-ip/edge", {"target": "vip/edge", "address": "172.24.4.9"}),
        port("edge.0.fip", "10.9.0.10", pairs=("vip/edge",)),
        port("edge.1.fip", "10.9.0.11", pairs=("vip/edge",)),
        port("app.ext", "172.24.4.20", external=True),
        port("app", "10.61.0.7"),
        vm("edge.0", "edge.0.fip"),
        vm("edge.1", "edge.1.fip"),
        vm("app", "app.ext", "app"),  # the external port first: not where an LB reaches it
        vm("new"),  # no port yet: left out
        obs(
            "lb/edge",
            {
                "redundancy": redundancy,
                "members": ("vm/edge.0", "vm/edge.1"),
                "address": "floating-ip/edge",
            },
        ),
        obs("lb-listener/edge.app.tcp.443", LISTENER, ["lb/edge", "vm/app"]),
        obs("lb-listener/edge.app.udp.53", UDP, ["lb/edge", "vm/app"]),
        obs("lb-listener/other.app.tcp.80", {**LISTENER, "publicPort": 80}, ["lb/other"]),
    ]


def test_every_member_gets_listeners_resolved_to_internal_addresses_bound_behind_the_fip():
    docs = members.documents("lb/edge", cloudlet())
    assert sorted(docs) == ["vm/edge.0", "vm/edge.1"]
    cfg = decode(docs["vm/edge.0"], "/run/x")
    assert cfg.name == "lb/edge"
    got = [
        (li.name, li.protocol, li.bind, li.port, [(b.id, b.address, b.port) for b in li.backends])
        for li in cfg.listeners
    ]
    assert got == [
        ("lb-listener/edge.app.tcp.443", "tcp", "10.9.0.50", 8443, [("vm/app", "10.61.0.7", 443)]),
        ("lb-listener/edge.app.udp.53", "udp", "10.9.0.50", 53, [("vm/app", "10.61.0.7", 53)]),
    ]


def test_a_vip_lb_member_speaks_vrrp_to_the_other_holder_first_by_vm_id():
    cfgs = members.configs("lb/edge", cloudlet())
    first, second = cfgs["vm/edge.0"].vrrp, cfgs["vm/edge.1"].vrrp
    assert first is not None and second is not None
    assert (first.vip, first.interface, first.source, first.peers) == (
        "10.9.0.50/24",
        "eth0",
        "10.9.0.10",
        ("10.9.0.11",),
    )
    assert (second.source, second.peers) == ("10.9.0.11", ("10.9.0.10",))
    assert first.priority > second.priority and first.router_id == second.router_id
    assert not first.preempt


def test_no_vrrp_without_vip_redundancy_and_a_plain_port_binds_its_own_address():
    objs = [o for o in cloudlet("none") if o.id != "floating-ip/edge"]
    lb = next(o for o in objs if o.id == "lb/edge")
    objs[objs.index(lb)] = obs("lb/edge", {**lb.attrs, "address": "port/edge.0.fip"})
    cfgs = members.configs("lb/edge", objs)
    assert all(c.vrrp is None for c in cfgs.values())
    assert {li.bind for c in cfgs.values() for li in c.listeners} == {"10.9.0.10"}


def test_no_lb_record_no_documents_and_clashing_listeners_are_refused():
    assert members.documents("lb/gone", cloudlet()) == {}
    clash = obs("lb-listener/edge.b.tcp.1", {**LISTENER, "port": 1}, ["lb/edge"])
    with pytest.raises(ValueError, match="8443"):
        members.documents("lb/edge", [*cloudlet(), clash])


def test_chunks_hold_a_document_of_any_length_and_a_torn_one_is_told():
    text = "x" * 600
    items = placement.chunk_items(text)
    assert items[placement.COUNT_KEY] == "3"
    assert all(len(v) <= 255 for v in items.values())
    assert placement.join_chunks({**items, "other": "1"}) == text
    assert placement.join_chunks({"other": "1"}) is None
    old = {**items, "cloudlet.lb:3": "y", "cloudlet.lb:4": "y"}
    assert placement.stale_keys(old, placement.chunk_items("short")) == [
        "cloudlet.lb:1",
        "cloudlet.lb:2",
        "cloudlet.lb:3",
        "cloudlet.lb:4",
    ]
    assert placement.document_keys(old)[0] == placement.COUNT_KEY
    del items["cloudlet.lb:1"]
    with pytest.raises(placement.TornDocument, match=r"cloudlet\.lb:1"):
        placement.join_chunks(items)


def test_lbs_using_a_vm_are_those_it_is_a_member_or_a_target_of_with_a_record():
    objs = cloudlet()
    assert members.lbs_using("vm/edge.1", objs) == ["lb/edge"]
    assert members.lbs_using("vm/app", objs) == ["lb/edge"]  # lb/other has no record
    assert members.lbs_using("vm/new", objs) == ["lb/edge"]
    assert members.lbs_using("vm/db", objs) == []
    without_record = [o for o in objs if o.kind != "lb"]
    assert members.lbs_using("vm/edge.1", without_record) == []
    assert members.lbs_using("vm/app", without_record) == []
