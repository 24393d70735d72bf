"""A router and its floating IPs on ``local``: the ``router`` and
``floating-ip`` data paths.

A router is a namespace with one leg on the external bridge and one leg per
subnet in its ``interfaces``, holding the subnet's gateway (the subnet's
first address, which the pools never hand out). Its external address is
drawn from the external range's pool like any public address and kept as
the record's computed ``address`` (``observe`` shows it); a fixed one, say
the range's last, would have to be kept out of the pool and out of reach
of ``externalCidr`` ranges too small for it. Its legs' MAC addresses derive
from the router's and subnets' ids, so a re-made router answers at once
(see ``_mac``). It forwards
(``net.ipv4.ip_forward=1``) through an nftables filter whose policy drops:

- replies (``ct state established,related``) and what a floating IP
  translated (``ct status dnat``) pass;
- between the router's own subnets everything passes (a Neutron router
  routes between its subnets; security groups are the filter there);
- from the external network, only the external legs of VMs (the load
  balancers', on the ``router`` data path) and external VIPs may open
  connections into the subnets: what the LB needs to reach its back-ends.
  Anything else on the external network (the host included) reaches no
  private address;
- a floating IP's target may open connections out, seen as the floating IP
  (a floating IP is a 1:1 NAT, as Neutron's); nothing else inside may.

A floating IP is an address from the external range that the router holds
(a /32 on its external leg) and translates: DNAT to its target's private
address (a VIP or the LB VM's port on the ``lbSubnet`` subnet), SNAT of the
target's own connections back to it. Its record is all the router needs:
every change to a floating IP re-renders the router's one ruleset.

VMs route through the router: a VM on a routed subnet gets a default route
via the gateway; a VM with an external leg (an LB on the ``router`` data
path) gets a route to each routed subnet via the router's external
address. ``vms.py`` calls ``vm_routes`` when it builds a VM; building a
router routes the VMs already there.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Iterable, Sequence

import attrs

from cloudlet.errors import ProviderError
from cloudlet.model.kinds import EXTERNAL, is_external, ref, refs
from cloudlet.model.resources import AttrValue
from cloudlet.providers.local import host
from cloudlet.providers.local.records import Record
from cloudlet.providers.local.site import Site

#: The router's leg on the external bridge (inside its namespace); a subnet's
#: leg is ``s<subnet uid>``.
EXT_LEG = "ext0"
TABLE = "cloudlet"


# -- the router ---------------------------------------------------------------


def build(site: Site, router: Record) -> None:
    ns = site.ns(router.uid)
    host.ensure_namespace(ns)
    _legs(site, router, ns)
    host.sysctl(ns, "net.ipv4.ip_forward", "1")
    refresh(site, router)
    _each_vm(site, router, "replace")


def _each_vm(site: Site, router: Record, verb: str) -> None:
    """Add (``replace``) or remove (``del``) the routes each VM there is has
    through ``router``."""
    index = {r.id: r for r in site.records.all()}
    present = host.namespaces()
    for vm in (r for r in index.values() if r.kind == "vm" and site.ns(r.uid) in present):
        lines = _routes(index, vm, [router])
        lines = [line.replace("replace", verb, 1) for line in lines]
        host.batch(site.ns(vm.uid), lines, check=False)


def unbuild(site: Site, router: Record) -> None:
    """The namespace (its legs go with it), and the routes VMs had through it."""
    _each_vm(site, router, "del")
    host.delete_namespace(site.ns(router.uid))
    for outside in _fabric_legs(site, router):
        host.run(["ip", "-n", site.fabric, "link", "del", outside], check=False)


def health(site: Site, router: Record, present: set[str]) -> dict[str, AttrValue]:
    ns = site.ns(router.uid)
    if ns not in present:
        return {"broken": "its namespace is gone"}
    try:
        missing = sorted(set(_wanted_legs(site, router)) - host.links(ns))
    except ProviderError as err:
        return {"broken": str(err)}
    if missing:
        return {"broken": f"its legs {', '.join(missing)} are gone"}
    if "policy drop" not in _table(ns):
        return {"broken": "its filter is gone"}
    sysctl = ["ip", "netns", "exec", ns, "sysctl", "-n", "net.ipv4.ip_forward"]
    forwarding = host.run(sysctl, check=False)
    if forwarding.strip() != "1":
        return {"broken": "it does not forward"}
    return {}


@attrs.frozen
class Leg:
    """One veth of a router: its fabric end joins ``bridge``, its router end
    holds ``address`` (with prefix) and a MAC address fixed by ``mac``."""

    outside: str
    bridge: str
    address: str
    mac: str


def _legs(site: Site, router: Record, ns: str) -> None:
    """A veth per leg (fabric end on the bridge, router end with its address);
    legs of subnets no longer in ``interfaces`` go."""
    have = host.links(ns)
    wanted = _wanted_legs(site, router)
    fabric_lines: list[str] = []
    ns_lines = [f"link del {name}" for name in sorted(have) if _is_leg(name) and name not in wanted]
    for inside, leg in wanted.items():
        if inside not in have:
            host.run(["ip", "-n", site.fabric, "link", "del", leg.outside], check=False)
            peer = f"peer name {inside} address {leg.mac} netns {ns}"
            fabric_lines.append(f"link add {leg.outside} type veth {peer}")
        fabric_lines += [
            f"link set {leg.outside} master {leg.bridge}",
            f"link set {leg.outside} up",
        ]
        ns_lines += [f"addr replace {leg.address} dev {inside}", f"link set {inside} up"]
    host.batch(site.fabric, fabric_lines)
    host.batch(ns, ns_lines)


def _wanted_legs(site: Site, router: Record) -> dict[str, Leg]:
    """The router's legs by their name inside its namespace."""
    legs: dict[str, Leg] = {}
    if router.attrs.get("external") is not False:
        address = f"{router.attrs['address']}/{site.prefix(router)}"
        legs[EXT_LEG] = Leg(f"r{router.uid}x", "ext", address, _mac(site, router, EXTERNAL))
    for subnet in _subnets(site, router):
        network = site.records.by_id(str(ref(subnet.attrs, "network")))
        if network is None:
            raise ProviderError(f"{router.id}: {subnet.id} has no network", transient=True)
        net = ipaddress.ip_network(str(subnet.attrs["cidr"]))
        mac = _mac(site, router, subnet.id)
        legs[f"s{subnet.uid}"] = Leg(
            _fabric_leg(router, subnet), f"b{network.uid}", gateway(net), mac
        )
    return legs


def _mac(site: Site, router: Record, network: str) -> str:
    """A leg's MAC address, from the router's id and the subnet's (not their
    uids): a router re-made (a new namespace, new veths) keeps its MACs, so
    the VMs' and the host's neighbour entries for the gateway, the external
    address and the floating IPs stay right and traffic resumes at once."""
    digest = hashlib.sha1(f"{site.key}/{router.id}/{network}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


def _fabric_legs(site: Site, router: Record) -> list[str]:
    subnets = [site.records.by_id(s) for s in refs(router.attrs, "interfaces")]
    return [f"r{router.uid}x"] + [_fabric_leg(router, s) for s in subnets if s is not None]


def _fabric_leg(router: Record, subnet: Record) -> str:
    """15 characters at most (IFNAMSIZ), unique per router and subnet."""
    return "r" + hashlib.sha1(f"{router.uid}/{subnet.uid}".encode()).hexdigest()[:10]


def _is_leg(name: str) -> bool:
    return name == EXT_LEG or (name.startswith("s") and len(name) == 9)


def _subnets(site: Site, router: Record) -> list[Record]:
    out = []
    for sid in refs(router.attrs, "interfaces"):
        subnet = site.records.by_id(sid)
        if subnet is None:
            raise ProviderError(f"{router.id}: its subnet {sid} does not exist", transient=True)
        out.append(subnet)
    return out


def gateway(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """A subnet's gateway: its first address (reserved by the pools)."""
    return f"{next(net.hosts())}/{net.prefixlen}"


# -- its ruleset and floating IPs ---------------------------------------------------


def refresh(site: Site, router: Record) -> None:
    """The router's floating IPs on its external leg and its one ruleset,
    from the records as they are now."""
    ns = site.ns(router.uid)
    if ns not in host.namespaces():
        return
    nat = _nat(site, router)
    if router.attrs.get("external") is not False:
        _hold(ns, [public for public, _ in nat])
    host.nft(ns, ruleset(_lb_sources(site), nat))


def _hold(ns: str, publics: Sequence[str]) -> None:
    """The floating IPs as /32s on the external leg (the router answers ARP
    for them); /32s of floating IPs gone are removed."""
    out = host.run(["ip", "-n", ns, "-j", "addr", "show", "dev", EXT_LEG], check=False)
    have = {
        str(a["local"])
        for link in json.loads(out.strip() or "[]")
        for a in link.get("addr_info", ())
        if a.get("family") == "inet" and a.get("prefixlen") == 32
    }
    lines = [f"addr del {a}/32 dev {EXT_LEG}" for a in sorted(have - set(publics))]
    lines += [f"addr replace {a}/32 dev {EXT_LEG}" for a in publics]
    host.batch(ns, lines)


def _nat(site: Site, router: Record) -> list[tuple[str, str]]:
    """(public, private) of each floating IP this router translates."""
    out = []
    for fip in (r for r in site.records.all() if r.kind == "floating-ip"):
        if _router_id_of(site, fip) != router.id:
            continue
        target = site.records.by_id(str(fip.attrs.get("target")))
        if target is not None and target.attrs.get("address"):
            out.append((str(fip.attrs["address"]), str(target.attrs["address"])))
    return sorted(out)


def _lb_sources(site: Site) -> list[str]:
    """Who on the external network may open connections into the subnets:
    the external legs of VMs (only LB VMs have one) and external VIPs."""
    attached = {p for r in site.records.all() if r.kind == "vm" for p in refs(r.attrs, "ports")}
    return sorted(
        str(r.attrs["address"])
        for r in site.records.all()
        if r.kind in ("port", "vip")
        and r.attrs.get("network") == EXTERNAL
        and (r.kind == "vip" or r.id in attached)
        and r.attrs.get("address")
    )


def ruleset(lb_sources: Sequence[str], nat: Sequence[tuple[str, str]]) -> str:
    """The router's nftables ruleset (the module docstring says why each rule)."""
    sources = f"ip saddr {{ {', '.join(lb_sources)} }} " if lb_sources else None
    forward = [
        "type filter hook forward priority filter; policy drop;",
        "ct state established,related accept",
        "ct status dnat accept",
        'iifname "s*" oifname "s*" accept',
        *([f'iifname "{EXT_LEG}" oifname "s*" {sources}accept'] if sources else []),
        *(f'iifname "s*" oifname "{EXT_LEG}" ip saddr {private} accept' for _, private in nat),
    ]
    pre = [f'iifname "{EXT_LEG}" ip daddr {public} dnat to {private}' for public, private in nat]
    post = [f'oifname "{EXT_LEG}" ip saddr {private} snat to {public}' for public, private in nat]
    return (
        "flush ruleset\n"
        f"table ip {TABLE} {{\n"
        + _chain("forward", forward)
        + _chain("pre", ["type nat hook prerouting priority dstnat; policy accept;", *pre])
        + _chain("post", ["type nat hook postrouting priority srcnat; policy accept;", *post])
        + "}\n"
    )


def _chain(name: str, lines: Iterable[str]) -> str:
    return f"  chain {name} {{\n" + "".join(f"    {line}\n" for line in lines) + "  }\n"


def _table(ns: str) -> str:
    return host.run(["ip", "netns", "exec", ns, "nft", "list", "table", "ip", TABLE], check=False)


# -- floating IPs ---------------------------------------------------------------


def _router_id_of(site: Site, fip: Record) -> str | None:
    """The router a floating IP depends on; else the one on its target's subnet."""
    named = next((d for d in fip.deps if d.startswith("router/")), None)
    if named is not None:
        return named
    target = site.records.by_id(str(fip.attrs.get("target")))
    subnet = ref(target.attrs, "subnet") if target is not None else None
    return next(
        (
            r.id
            for r in site.records.all()
            if r.kind == "router" and subnet in refs(r.attrs, "interfaces")
        ),
        None,
    )


def _router_of(site: Site, fip: Record) -> Record | None:
    rid = _router_id_of(site, fip)
    return site.records.by_id(rid) if rid else None


def build_fip(site: Site, fip: Record) -> None:
    router = _router_of(site, fip)
    if router is None:
        raise ProviderError(f"{fip.id}: no router translates it", transient=True)
    target = site.records.by_id(str(fip.attrs.get("target")))
    if target is None or not target.attrs.get("address"):
        raise ProviderError(f"{fip.id}: its target has no address", transient=True)
    refresh(site, router)


def unbuild_fip(site: Site, fip: Record) -> None:
    router = _router_of(site, fip)
    site.records.remove(fip.uid)
    if router is not None:
        refresh(site, router)


def fip_health(site: Site, fip: Record, present: set[str]) -> dict[str, AttrValue]:
    router = _router_of(site, fip)
    if router is None or site.ns(router.uid) not in present:
        return {"broken": "its router is gone"}
    if not _holds(site, router, fip):
        return {"broken": "its translation is gone"}
    return {}


def _holds(site: Site, router: Record, fip: Record) -> bool:
    """The router holds the floating IP and translates it to its target."""
    public = str(fip.attrs.get("address"))
    target = site.records.by_id(str(fip.attrs.get("target")))
    private = target.attrs.get("address") if target is not None else None
    table = _table(site.ns(router.uid))
    out = host.run(["ip", "-n", site.ns(router.uid), "-o", "addr", "show"], check=False)
    return f"daddr {public} dnat to {private}\n" in table and f" {public}/32 " in out


# -- VMs' routes ---------------------------------------------------------------


def vm_routes(site: Site, vm: Record, *, refresh_routers: bool = True) -> None:
    """A VM's routes through the routers there are (the hook ``vms.build``
    calls); a VM with an external leg also opens the routers' filters to it."""
    index = {r.id: r for r in site.records.all()}
    routers = [r for r in index.values() if r.kind == "router"]
    host.batch(site.ns(vm.uid), _routes(index, vm, routers), check=False)
    if refresh_routers and routers and _external_leg(index, vm):
        for router in routers:
            refresh(site, router)


def _routes(index: dict[str, Record], vm: Record, routers: Sequence[Record]) -> list[str]:
    """``ip route replace`` lines: with an external leg, each routed subnet
    via the router's external address; else a default route via the gateway
    of the VM's first port on a routed subnet (one default route only)."""
    ports = [index.get(p) for p in refs(vm.attrs, "ports")]
    on = {
        str(ref(p.attrs, "subnet")): i
        for i, p in enumerate(ports)
        if p is not None and not is_external(p.attrs)
    }
    external = _external_leg(index, vm)
    lines: list[str] = []
    for router in routers:
        subnets = [index[s] for s in refs(router.attrs, "interfaces") if s in index]
        if external and router.attrs.get("address"):
            via = router.attrs["address"]
            off = [s for s in subnets if s.id not in on]  # the VM's own subnets are on-link
            lines += [f"route replace {s.attrs['cidr']} via {via}" for s in off]
        elif not external and not lines:
            first = next((s for s in subnets if s.id in on), None)
            if first is not None:
                via = gateway(ipaddress.ip_network(str(first.attrs["cidr"]))).split("/")[0]
                lines.append(f"route replace default via {via} dev eth{on[first.id]}")
    return lines


def _external_leg(index: dict[str, Record], vm: Record) -> bool:
    ports = (index.get(p) for p in refs(vm.attrs, "ports"))
    return any(p is not None and is_external(p.attrs) for p in ports)
