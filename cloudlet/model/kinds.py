"""The vocabulary of resource kinds: what their attributes mean, said once.

The planner and every provider read the same attributes: which value names
the site's external network, which attributes hold lists of references,
which cannot change in place. Each of them writing its own copy let the
copies drift apart (one provider checked a hard-coded pair of attributes
while the planner replaced on the table), so a plan could update in place
what its provider then refuses. These are rules of the model, the same on
every cloud, so they live here and everything else imports them.

What is *not* here: a cloud's own limits. Nova refusing a resize that
shrinks a root disk depends on that cloud's flavors, so it is the
provider's answer to ``Provider.replacement_reason``. And the simulated
cloud keeps its own refusals, written from what real clouds refuse
(cloudlet/providers/fake/rules.py), so that a table here that forgets a
rule is caught by the tests instead of mirrored by them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cloudlet.model.resources import Attrs, Observed, Resource, freeze_value

#: Resource kinds, in the order an operator reads them (outside in).
KINDS: tuple[str, ...] = (
    "network",
    "subnet",
    "router",
    "security-group",
    "vip",
    "port",
    "vm",
    "floating-ip",
    "k8s-node",
    "lb",
    "lb-listener",
)

#: A cloud-computed attribute: why an object that exists cannot work as
#: built (a namespace deleted behind our back, a daemon that died, a server
#: in ERROR). The planner replaces such an object, whatever else matches.
BROKEN = "broken"

#: A port's or VIP's ``network`` when it sits on the site's external network
#: (the platform's public network) instead of one of the cloudlet's subnets.
EXTERNAL = "@external"

#: Kinds that hand their dependents a share of themselves: a subnet gives its
#: ports and VIPs their addresses from its pool. Re-created after an
#: out-of-band delete, such an object starts its pool afresh and would hand
#: out again what the old one's holders still hold (two ports on one
#: address), so the holders are rebuilt with it. Other dependents of a
#: re-created object are left as they are: what a VM's listener or node
#: refers to is the engine's id, which the new VM has too.
POOLS: Mapping[str, frozenset[str]] = {"subnet": frozenset({"port", "vip"})}

#: Attributes that cannot change in place: a change replaces the resource.
#: A VM's ports are here although some clouds hot-plug NICs: the model does
#: not promise that every cloud can.
IMMUTABLE: Mapping[str, frozenset[str]] = {
    "network": frozenset(),
    "subnet": frozenset({"network", "cidr"}),
    "router": frozenset({"external"}),
    "security-group": frozenset(),
    "vip": frozenset({"subnet", "network"}),
    "port": frozenset({"subnet", "network"}),
    "vm": frozenset({"image", "ports"}),
    "floating-ip": frozenset(),
    "k8s-node": frozenset({"cluster", "role", "vm"}),
    "lb": frozenset({"type"}),
    "lb-listener": frozenset({"protocol", "port"}),
}

#: Attributes the cloud sets itself, by kind (docs/resources.md, "computed
#: by the cloud"). An LB's ``address`` is not one: it is the id of what
#: carries its public address, which the engine sets like any attribute.
COMPUTED: Mapping[str, tuple[str, ...]] = {
    "vip": ("address",),
    "port": ("address",),
    "floating-ip": ("address",),
    "vm": ("status",),
}
#: Kinds the cloud hands an address to.
ADDRESSED: tuple[str, ...] = ("vip", "port", "floating-ip")

Source = Resource | Observed | Attrs


def _attrs(source: Source) -> Attrs:
    return source if isinstance(source, Mapping) else source.attrs


def refs(source: Source, key: str) -> tuple[str, ...]:
    """A list-valued attribute (``ports``, ``securityGroups``, ``members``...), () if unset."""
    value = _attrs(source).get(key)
    return value if isinstance(value, tuple) else ()


def ref(source: Source, key: str) -> str | None:
    """A single reference or name (``subnet``, ``network``, ``vm``...), None if unset."""
    value = _attrs(source).get(key)
    return value if isinstance(value, str) else None


def is_external(source: Source) -> bool:
    """Whether a port or VIP sits on the site's external network."""
    return _attrs(source).get("network") == EXTERNAL


def with_computed(kind: str, attrs: Attrs, old: Mapping[str, Any]) -> dict[str, Any]:
    """``attrs`` plus what the cloud computed on ``old``: an update keeps those."""
    return {**attrs, **{k: old[k] for k in COMPUTED.get(kind, ()) if k in old}}


def immutable_changes(kind: str, desired: Attrs, current: Mapping[str, object]) -> tuple[str, ...]:
    """The attributes ``desired`` sets that differ from ``current`` and cannot
    change in place, sorted: any of them makes the change a replacement.

    Only attributes the engine sets count (as in the planner's diff), and
    ``current`` may be a raw record (lists, not tuples): values are compared
    in the model's shapes.
    """
    return tuple(
        k
        for k in sorted(IMMUTABLE.get(kind, ()))
        if k in desired and freeze_value(current.get(k)) != freeze_value(desired[k])
    )


def immutable_refusal(resource: Resource, current: Mapping[str, object]) -> str | None:
    """Why a provider must refuse to update ``current`` into ``resource`` in place, or None."""
    changed = immutable_changes(resource.kind, resource.attrs, current)
    if not changed:
        return None
    return f"{resource.id}: cannot change immutable {', '.join(changed)} in place"
