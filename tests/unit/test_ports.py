from __future__ import annotations

import attrs
from helpers import cloudlet

from cloudlet.model.ports import REMAP_START, allocate_ports
from cloudlet.model.spec import Expose, LoadBalancer, PortSpec, Vm


def vms(*names, port=443, lb="root"):
    return [Vm(n, "internal", expose=Expose(lb, [PortSpec(port)])) for n in names]


def public(mappings):
    return {m.target: m.public_port for m in mappings}


def test_first_declared_keeps_port_later_ones_get_free_ports():
    got = allocate_ports(cloudlet(clusters=[], vms=vms("a", "b", "c")))
    assert public(got) == {"a": 443, "b": REMAP_START, "c": REMAP_START + 1}


def test_removing_an_app_never_moves_another():
    before = allocate_ports(cloudlet(clusters=[], vms=vms("a", "b", "c")))
    after = allocate_ports(cloudlet(clusters=[], vms=vms("b", "c")), before)
    assert public(after) == {"b": REMAP_START, "c": REMAP_START + 1}


def test_adding_an_app_first_in_the_file_never_moves_existing_ones():
    before = allocate_ports(cloudlet(clusters=[], vms=vms("b")))
    after = allocate_ports(cloudlet(clusters=[], vms=vms("a", "b")), before)
    assert public(after) == {"b": 443, "a": REMAP_START}


def test_freed_remapped_port_is_reused_by_lowest_free_rule():
    before = allocate_ports(cloudlet(clusters=[], vms=vms("a", "b", "c")))
    after = allocate_ports(cloudlet(clusters=[], vms=vms("a", "c", "d")), before)
    assert public(after) == {"a": 443, "c": REMAP_START + 1, "d": REMAP_START}


def test_dedicated_lb_forwards_unchanged():
    c = cloudlet(
        clusters=[],
        vms=vms("a", lb="ded"),
        load_balancers=[LoadBalancer("ded", "internal", type="dedicated")],
    )
    assert public(allocate_ports(c)) == {"a": 443}


def test_stale_previous_mapping_for_other_lb_type_is_ignored():
    before = allocate_ports(cloudlet(clusters=[], vms=vms("a", "b")))
    moved = [attrs.evolve(m, public_port=12345) for m in before]
    c = cloudlet(
        clusters=[],
        vms=vms("a", "b"),
        load_balancers=[LoadBalancer("root", "internal", type="dedicated")],
    )
    assert public(allocate_ports(c, moved)) == {"a": 443, "b": 443}
