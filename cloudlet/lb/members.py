"""Each LB member VM's document, from what a cloud's observe reads back.

OpenStack and vSphere keep an LB and its listeners as records (server
metadata, folder records) whose targets are VM ids: an LB VM could not
render from them. Their observe reads every object back as ``Observed`` in
the model's terms (a port's ``address``, a VIP's ``subnet``, a floating IP's
``target``, a VM's ``ports``), which is all it takes to resolve those ids to
addresses; :func:`documents` does that for every member of one LB, so each
provider only says where the text goes. ``local`` builds the same documents
from its own records (``providers/local/lbs.py``).

What is resolved, as on ``local``:

- a back-end is the target VM's first port not on the external network;
- the bind address is what carries the LB's public address: the VIP or port
  itself, or the port or VIP a floating IP is NAT'd to (the guest sees the
  fixed address, never the floating one);
- with ``redundancy: vip``, each member whose port lists the VIP in its
  ``allowedAddressPairs`` gets a VRRP instance: unicast to the other
  holders' ports, priorities by VM id, ``nopreempt``. The interface is
  ``eth<i>``, ``i`` being that port's position in the VM's ``ports`` (the
  order its NICs were plugged in): the model knows no guest interface names,
  so an image names its NICs in that order or the agent maps them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from cloudlet.lb.document import build, encode
from cloudlet.lb.render import LbConfig, Vrrp, section_name
from cloudlet.model.kinds import is_external, ref, refs
from cloudlet.model.resources import Observed

#: A placeholder: a document carries no runtime directory (the agent's own).
_RUNTIME = "/run/cloudlet-lb"
#: VRRP advertisement interval (s) and priorities, as on ``local``.
ADVERT = 0.1
TOP_PRIORITY, PRIORITY_STEP = 200, 10


def documents(lb_id: str, objects: Iterable[Observed]) -> dict[str, str]:
    """Encoded document by member VM id, for every member ``lb_id`` lists.

    Empty when the LB's record is not among ``objects``. Raises ValueError
    when its listeners cannot make one configuration (two on one port)."""
    return {member: encode(cfg) for member, cfg in configs(lb_id, objects).items()}


def lbs_using(vm_id: str, objects: Iterable[Observed]) -> list[str]:
    """The LBs whose documents name ``vm_id``: it is one of their members, or
    a target of one of their listeners.

    Only LBs whose record is among ``objects``: without it there is no
    document, and the record's own write makes them when it comes. A
    provider calls this with what it read before making or changing the VM
    (a member or target re-made alone, the LB untouched, would otherwise
    keep a missing or stale document)."""
    objs = [o for o in objects if o.id is not None]
    lbs = {str(o.id): o for o in objs if o.kind == "lb"}
    found = {lb for lb, obj in lbs.items() if vm_id in refs(obj, "members")}
    for li in (o for o in objs if o.kind == "lb-listener" and vm_id in refs(o, "targets")):
        found |= {d for d in li.deps if d in lbs}
    return sorted(found)


def configs(lb_id: str, objects: Iterable[Observed]) -> dict[str, LbConfig]:
    by_id: dict[str, Observed] = {}
    for obj in objects:
        if obj.id is not None:
            by_id.setdefault(obj.id, obj)  # the oldest copy: the one the planner keeps
    lb = by_id.get(lb_id)
    if lb is None or lb.kind != "lb":
        return {}
    listeners = sorted(
        (o for o in by_id.values() if o.kind == "lb-listener" and lb_id in o.deps),
        key=lambda o: str(o.id),
    )
    records = [(str(li.id), li.attrs) for li in listeners]
    backends = {t: internal_address(by_id, t) for li in listeners for t in refs(li, "targets")}
    public = fixed_public(lb, by_id)
    bind = _address(public) or "0.0.0.0"
    vip = public if public is not None and public.kind == "vip" else None
    if lb.attrs.get("redundancy") != "vip":
        vip = None
    out = {}
    for member in refs(lb, "members"):
        vrrp = vrrp_instance(vip, member, by_id) if vip is not None else None
        out[member] = build(lb_id, records, bind, backends, _RUNTIME, vrrp)
    return out


def _address(obj: Observed | None) -> str | None:
    value = obj.attrs.get("address") if obj is not None else None
    return str(value) if value else None


def internal_address(by_id: Mapping[str, Observed], vm_id: str) -> str | None:
    """A VM's address on an internal subnet (where an LB reaches it), if it has one yet."""
    vm = by_id.get(vm_id)
    for port_id in refs(vm, "ports") if vm is not None else ():
        port = by_id.get(port_id)
        if port is not None and not is_external(port):
            return _address(port)
    return None


def fixed_public(lb: Observed, by_id: Mapping[str, Observed]) -> Observed | None:
    """The VIP or port carrying the LB's public address: itself, or what its
    floating IP is NAT'd to (the address the guest sees and binds)."""
    public = by_id.get(str(ref(lb, "address")))
    if public is not None and public.kind == "floating-ip":
        public = by_id.get(str(ref(public, "target")))
    return public


def _holders(vip_id: str, by_id: Mapping[str, Observed]) -> list[tuple[str, int, str]]:
    """(vm id, interface index, port address) of every VM with a port listing the VIP."""
    out = []
    for vm in sorted((o for o in by_id.values() if o.kind == "vm"), key=lambda o: str(o.id)):
        for index, port_id in enumerate(refs(vm, "ports")):
            port = by_id.get(port_id)
            address = _address(port)
            if port is not None and address and vip_id in refs(port, "allowedAddressPairs"):
                out.append((str(vm.id), index, address))
                break
    return out


def _prefix(vip: Observed, by_id: Mapping[str, Observed]) -> int:
    subnet = by_id.get(str(ref(vip, "subnet")))
    cidr = subnet.attrs.get("cidr") if subnet is not None else None
    return ipaddress.ip_network(str(cidr), strict=False).prefixlen if cidr else 32


def vrrp_instance(vip: Observed, member: str, by_id: Mapping[str, Observed]) -> Vrrp | None:
    """``member``'s VRRP instance for the LB's VIP; None if no port of it lists the VIP
    or the VIP has no address yet."""
    address = _address(vip)
    found = _holders(str(vip.id), by_id)
    mine = next(((n, i, a) for n, (vm, i, a) in enumerate(found) if vm == member), None)
    if address is None or mine is None:
        return None
    position, index, source = mine
    ip = ipaddress.ip_address(address)
    return Vrrp(
        instance=section_name(str(vip.id)),
        interface=f"eth{index}",
        vip=f"{ip}/{_prefix(vip, by_id)}",
        router_id=int(ip) % 254 + 1,
        priority=max(1, TOP_PRIORITY - PRIORITY_STEP * position),
        peers=tuple(a for vm, _, a in found if vm != member),
        source=source,
        advert_interval=ADVERT,
        preempt=False,
    )
