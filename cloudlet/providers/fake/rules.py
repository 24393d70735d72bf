"""What the simulated cloud refuses, as the real clouds do.

These are written from the clouds' APIs, not taken from the model's
``IMMUTABLE`` table: the fake is the oracle every engine test converges
against, and an oracle that imported the model's rules would agree with any
mistake in them. If the model forgot one, the planner would update in place
what this cloud refuses, and the property tests would see the refusal.

The fake allows some changes the model still replaces: a router's gateway
(Neutron sets and clears ``external_gateway_info`` in place) and a server's
ports (Nova attaches and detaches interfaces). Replacing more than a cloud
needs is safe; updating what it refuses is the bug this catches.
"""

from __future__ import annotations

from collections.abc import Mapping

from cloudlet.model.resources import AttrValue, freeze_value

#: Attributes the cloud will not change on an update, by kind.
FIXED_AT_CREATE: Mapping[str, tuple[str, ...]] = {
    # Neutron: a subnet's network_id and cidr are create-only.
    "subnet": ("cidr", "network"),
    # Neutron: a port's network_id is create-only; and this cloud hands a
    # port its address from its subnet once, so it will not move it either.
    "port": ("network", "subnet"),
    "vip": ("network", "subnet"),  # a VIP is a reserved Neutron port
    # Nova: an update never changes a server's image; that is a rebuild.
    "vm": ("image",),
    # kubeadm: a node joins one cluster, in one role, from one machine;
    # anything else is a reset and a new join.
    "k8s-node": ("cluster", "role", "vm"),
    # Octavia: a load balancer's flavor, a listener's protocol and
    # protocol_port are create-only.
    "lb": ("type",),
    "lb-listener": ("port", "protocol"),
}

#: Root disk in GB, like the test cloud's (and DevStack's) m1 flavors.
ROOT_DISK_GB: Mapping[str, int] = {
    "m1.tiny": 1,
    "m1.small": 20,
    "m1.medium": 40,
    "m1.large": 80,
    "m1.xlarge": 160,
}


def fixed_changes(kind: str, old: Mapping[str, object], new: Mapping[str, AttrValue]) -> list[str]:
    """The create-only attributes an update from ``old`` to ``new`` would change."""
    return [
        k
        for k in FIXED_AT_CREATE.get(kind, ())
        if freeze_value(old.get(k)) != freeze_value(new.get(k))
    ]


def disk_shrink(
    kind: str, old: Mapping[str, AttrValue], new: Mapping[str, AttrValue]
) -> str | None:
    """Why a VM cannot go from ``old`` to ``new`` in place, or None.

    A server's root disk comes from its flavor and a resize can never shrink
    it (Nova refuses with HTTP 400), so such a flavor change needs a new
    server. The fake enforces the rule so that the engine's handling of it
    (the plan shows a replacement) is exercised by every test on the fake,
    not only on a real OpenStack.
    """
    if kind != "vm":
        return None
    before = ROOT_DISK_GB.get(str(old.get("flavor")))
    after = ROOT_DISK_GB.get(str(new.get("flavor")))
    if before is None or after is None or after >= before:
        return None
    return f"a resize cannot shrink the root disk from {before} to {after} GB"
