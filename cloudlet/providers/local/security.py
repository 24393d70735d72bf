"""Security groups on ``local``: Neutron's semantics, in each VM's namespace.

A VM's port ``i`` is its ``eth<i>``. A port that lists security groups is
filtered as Neutron filters it: stateful (established and related traffic
passes, invalid is dropped), a *new* connection in either direction passes
only if a rule of one of the port's groups allows it (protocol, ports and
remote CIDR: the source for ingress, the destination for egress), and
everything else is dropped. IPv6 neighbour discovery passes, as Neutron lets
it. A port with no group is not filtered at all: that is cloudlet's meaning
of "no group" on every platform (on OpenStack, port security off), where a
real Neutron port with port security on and an empty group list would drop
everything.

The back-end VM's namespace also holds the nat redirect of every port to the
back-end (``vms.redirect_ruleset``), so a rule must match the port the
client asked for, not the back-end's 7000: ingress is filtered at
prerouting, at priority mangle (-150), after conntrack (-200) and before
the redirect (dstnat, -100). Egress is filtered at output.

The rendering is pure (``filter_table``, ``ruleset``); ``apply`` and
``refresh_*`` read the records and load the result into the namespaces.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import attrs

from cloudlet.model.kinds import refs
from cloudlet.providers.local import host, lbs
from cloudlet.providers.local.records import Record
from cloudlet.providers.local.site import Site

TABLE = "cloudlet_sg"
#: ICMPv6 that Neutron lets through a filtered port, by direction.
ND_IN = "nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert, mld-listener-query"
ND_OUT = "nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, mld-listener-report"


@attrs.frozen
class PortFilter:
    """One filtered interface and the rules of all its port's groups."""

    ifname: str
    rules: tuple[str, ...]
    #: The port holds a VIP: VRRP among its holders passes (as Octavia adds a
    #: VRRP rule to its amphorae's groups); the model's rules cannot name it.
    vrrp: bool = False


def rule_match(text: str) -> tuple[str, str]:
    """A model rule (``"ingress tcp 8000-8100 10.0.0.0/8"``) as its direction
    and the nftables match that accepts what it allows.

    The grammar is the model's (``cloudlet.model.expand.rule_text``, checked
    by ``validate``): protocol ``tcp``, ``udp``, ``icmp`` or ``any``, ports
    ``-``, ``N`` or ``N-M`` (tcp and udp only), remote a CIDR whose family is
    the rule's (Neutron's ethertype): an IPv4 rule never matches IPv6."""
    direction, protocol, ports, remote = text.split()
    if direction not in ("ingress", "egress"):
        raise ValueError(f"{text!r}: direction {direction!r}")
    net = ipaddress.ip_network(remote, strict=False)
    family = "ip" if net.version == 4 else "ip6"
    side = "saddr" if direction == "ingress" else "daddr"
    if ports != "-" and protocol not in ("tcp", "udp"):
        raise ValueError(f"{text!r}: ports apply to tcp and udp only")
    parts = [f"meta nfproto ipv{net.version}" if net.prefixlen == 0 else f"{family} {side} {net}"]
    if protocol in ("tcp", "udp"):
        parts.append(f"{protocol} dport {ports}" if ports != "-" else f"meta l4proto {protocol}")
    elif protocol == "icmp":
        parts.append("meta l4proto " + ("icmp" if net.version == 4 else "ipv6-icmp"))
    elif protocol != "any":
        raise ValueError(f"{text!r}: protocol {protocol!r}")
    return direction, " ".join(parts)


def _chain(name: str, matches: Sequence[str], nd: str, vrrp: bool = False) -> list[str]:
    return [
        f"  chain {name} {{",
        "    ct state established,related accept",
        "    ct state invalid drop",
        f"    icmpv6 type {{ {nd} }} accept",
        *(["    meta l4proto vrrp accept"] if vrrp else []),
        *(f"    {m} accept" for m in sorted(set(matches))),
        "    drop",
        "  }",
    ]


def filter_table(ports: Sequence[PortFilter]) -> str:
    """The ``inet`` table filtering ``ports`` (empty: no table at all)."""
    if not ports:
        return ""
    lines = [f"table inet {TABLE} {{"]
    ingress = ["    type filter hook prerouting priority mangle; policy accept;"]
    egress = ["    type filter hook output priority filter; policy accept;"]
    for port in ports:
        matches: dict[str, list[str]] = {"ingress": [], "egress": []}
        for text in port.rules:
            direction, match = rule_match(text)
            matches[direction].append(match)
        lines += _chain(f"in_{port.ifname}", matches["ingress"], ND_IN, port.vrrp)
        lines += _chain(f"out_{port.ifname}", matches["egress"], ND_OUT, port.vrrp)
        ingress.append(f'    iifname "{port.ifname}" jump in_{port.ifname}')
        egress.append(f'    oifname "{port.ifname}" jump out_{port.ifname}')
    lines += ["  chain ingress {", *ingress, "  }", "  chain egress {", *egress, "  }", "}"]
    return "\n".join(lines) + "\n"


def ruleset(redirect: str, ports: Sequence[PortFilter]) -> str:
    """A VM namespace's whole ruleset: the back-end's redirect (a table of its
    own, "" for an LB VM) and the filter, replacing whatever was loaded."""
    return "flush ruleset\n" + redirect.removeprefix("flush ruleset\n") + filter_table(ports)


# -- reading the records, loading the namespaces -------------------------------


def port_filters(site: Site, vm: Record) -> list[PortFilter]:
    """The VM's filtered interfaces. A group the records lack adds no rule
    (fail closed: the port stays filtered)."""
    records = {r.id: r for r in site.records.all()}  # one read, not one per lookup
    out: list[PortFilter] = []
    for i, port_id in enumerate(refs(vm.attrs, "ports")):
        port = records.get(port_id)
        groups = refs(port.attrs, "securityGroups") if port else ()
        if not groups:
            continue
        rules: set[str] = set()
        for group_id in groups:
            group = records.get(group_id)
            rules.update(refs(group.attrs, "rules") if group else ())
        vrrp = bool(refs(port.attrs, "allowedAddressPairs")) if port else False
        out.append(PortFilter(f"eth{i}", tuple(sorted(rules)), vrrp))
    return out


def ruleset_for(site: Site, vm: Record, *, backend: bool) -> str:
    """What to load into the VM's namespace: the redirect if it runs the
    back-end, and the filter of its ports."""
    from cloudlet.providers.local.vms import redirect_ruleset  # vms calls us

    return ruleset(redirect_ruleset() if backend else "", port_filters(site, vm))


def apply(site: Site, vm: Record) -> None:
    """Reload the VM's ruleset if its namespace exists (one being built gets
    it from ``vms.build``)."""
    if site.ns(vm.uid) not in host.namespaces():
        return
    backend = lbs.lb_of_member(site, vm.id) is None
    host.nft(site.ns(vm.uid), ruleset_for(site, vm, backend=backend))


def vms_using(site: Site, port_ids: set[str]) -> list[Record]:
    return [
        r for r in site.records.all() if r.kind == "vm" and port_ids & set(refs(r.attrs, "ports"))
    ]


def refresh_group(site: Site, group: Record) -> None:
    """A group's rules changed: reload every VM with a port in the group."""
    ports = {
        r.id
        for r in site.records.all()
        if r.kind == "port" and group.id in refs(r.attrs, "securityGroups")
    }
    for vm in vms_using(site, ports):
        apply(site, vm)


def refresh_port(site: Site, port: Record) -> None:
    """A port's groups changed: reload the VM it belongs to."""
    for vm in vms_using(site, {port.id}):
        apply(site, vm)
