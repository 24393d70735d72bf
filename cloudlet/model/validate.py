"""Semantic checks of a structured cloudlet spec.

Structuring (cattrs) only proves that every value has the right shape; these
checks catch what would otherwise fail late, half-applied, against a real
orchestrator: bad names and CIDRs, dangling references, port clashes and
networks too small for what is placed on them. Every problem carries the path
of the offending value, which ``locate`` turns into ``file:line:col``; all of
them are collected so the operator fixes a file in one pass.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Protocol

import attrs

from cloudlet.errors import Location
from cloudlet.model import gateway as gw
from cloudlet.model.spec import API_VERSION, KIND, Cloudlet, Expose, Gateway, Platform

Path = tuple[Hashable, ...]
Locate = Callable[[Path], Location | None]
Problem = tuple[Location | None, str]

MAX_FAKE_DELAY_MS = 600_000
NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,39}")
LABEL_RE = re.compile(r"[A-Za-z0-9._/-]{0,63}")
PLAIN_KEY_RE = re.compile(r"[A-Za-z0-9_./-]{1,63}")
PORTS_RE = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?")
PORT_MAX = 65535
SUGGEST_MAX = 200
PREFIX_MIN, PREFIX_MAX = 16, 29
#: Network address, gateway and broadcast: never available to ports.
RESERVED_ADDRESSES = 3
MASTERS_MAX, WORKERS_MAX = 9, 1000

#: Platform fields by the platform type they configure (snake_case names).
PLATFORM_FIELDS: dict[str, tuple[str, ...]] = {
    "fake": ("latency_ms", "jitter_ms", "failure_rate", "seed"),
    "openstack": ("cloud", "external_network"),
    "vsphere": ("datacenter", "cluster", "datastore", "network", "template"),
    "local": ("external_cidr",),
}
#: Platform types whose fields are all optional.
OPTIONAL_FIELDS = frozenset({"fake", "local"})


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class _Placed(Protocol):
    @property
    def network(self) -> str: ...
    @property
    def security_groups(self) -> list[str]: ...


def camel(name: str) -> str:
    """The YAML spelling of a snake_case attribute name."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def shown(value: object, limit: int = 40) -> str:
    """A value quoted for a message, cut short: inputs may be megabytes long."""
    try:
        text = repr(value)
    except ValueError:  # an integer too long to print
        text = "<huge number>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render_path(path: Path) -> str:
    """``spec.networks[0].cidr``: the path as an operator reads it."""
    out = ""
    for step in path:
        if isinstance(step, int) and not isinstance(step, bool):
            out += f"[{step}]"
        elif not isinstance(step, str) or not PLAIN_KEY_RE.fullmatch(step):
            out += f"[{shown(step)}]"  # keys from the file may hold anything, even newlines
        else:
            out += f".{step}" if out else step
    return out


def did_you_mean(value: object, known: Iterable[str]) -> str:
    """A `` (did you mean 'x'?)`` suffix when something known is close."""
    known = list(known)
    text = str(value)
    if len(known) > SUGGEST_MAX or len(text) > SUGGEST_MAX:
        return ""  # matching is quadratic: not worth it on huge inputs
    if camel(text) in known and camel(text) != text:
        return f" (did you mean {camel(text)!r}?)"
    close = difflib.get_close_matches(text, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _cidr_problem(text: str) -> str | None:
    """Why ``text`` is no network address (IPv4 or IPv6), or None."""
    try:
        ipaddress.ip_network(text, strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            return f"not a valid CIDR: {shown(text)}"
        return f"host bits are set in {shown(text)} (did you mean '{loose}'?)"
    return None


def _no_location(_path: Path) -> Location | None:
    return None


@attrs.define
class _Checker:
    cloudlet: Cloudlet
    locate: Locate
    problems: list[Problem] = attrs.field(factory=list)

    def add(self, path: Path, message: str) -> None:
        where = render_path(path)
        self.problems.append((self.locate(path), f"{where}: {message}" if where else message))

    def name(self, path: Path, name: str) -> None:
        if not NAME_RE.fullmatch(name):
            self.add(path, f"invalid name {shown(name)}: must match [a-z][a-z0-9-]{{0,39}}")

    def unique(self, groups: Sequence[tuple[Path, Sequence[_Named]]]) -> None:
        """Names must be unique across ``groups``, which share one namespace."""
        seen: dict[str, Path] = {}
        for base, items in groups:
            for i, item in enumerate(items):
                path = (*base, i, "name")
                self.name(path, item.name)
                first = seen.setdefault(item.name, path)
                if first != path:
                    used_by = render_path(first[:-1])
                    self.add(path, f"name {item.name!r} is already used by {used_by}")

    def reference(self, path: Path, value: str, known: Mapping[str, object], what: str) -> None:
        if value not in known:
            self.add(path, f"unknown {what} {shown(value)}{did_you_mean(value, known)}")

    def network(self, path: Path, text: str) -> ipaddress.IPv4Network | None:
        """The parsed subnet, or None after reporting why it is unusable."""
        problem = _cidr_problem(text)
        if problem:
            self.add(path, problem)
            return None
        net = ipaddress.ip_network(text)
        if not isinstance(net, ipaddress.IPv4Network):
            self.add(path, f"must be an IPv4 network, got {shown(text)}")
            return None
        if not PREFIX_MIN <= net.prefixlen <= PREFIX_MAX:
            self.add(path, f"prefix /{net.prefixlen} out of range /{PREFIX_MIN}../{PREFIX_MAX}")
            return None
        return net


def _check_header(c: _Checker) -> None:
    cl = c.cloudlet
    if cl.api_version != API_VERSION:
        c.add(("apiVersion",), f"must be {API_VERSION!r}, got {shown(cl.api_version)}")
    if cl.kind != KIND:
        c.add(("kind",), f"must be {KIND!r}, got {shown(cl.kind)}")
    c.name(("metadata", "name"), cl.metadata.name)
    for key, value in cl.metadata.labels.items():
        path = ("metadata", "labels", key)
        if not key or not LABEL_RE.fullmatch(key):
            c.add(path, f"invalid label key {shown(key)}: 1-63 characters of A-Za-z0-9._/-")
        if not LABEL_RE.fullmatch(value):
            c.add(path, f"invalid label value {shown(value)}: 0-63 characters of A-Za-z0-9._/-")


def _check_names(c: _Checker) -> None:
    spec = c.cloudlet.spec
    c.unique([(("spec", "networks"), spec.networks)])
    c.unique([(("spec", "securityGroups"), spec.security_groups)])
    c.unique(
        [
            (("spec", "loadBalancers"), spec.load_balancers),
            (("spec", "clusters"), spec.clusters),
            (("spec", "vms"), spec.vms),
        ]
    )


def _check_platform(c: _Checker) -> None:
    platform = c.cloudlet.spec.platform
    base: Path = ("spec", "platform")
    defaults = {a.name: a.default for a in attrs.fields(Platform)}
    for kind, fields in PLATFORM_FIELDS.items():
        for field in fields:
            value = getattr(platform, field)
            if kind != platform.type and value != defaults[field]:
                c.add((*base, camel(field)), f"{camel(field)} applies to platform type {kind}")
            elif kind == platform.type and kind not in OPTIONAL_FIELDS and not value:
                c.add(base, f"platform type {kind} requires {camel(field)}")
    if platform.gateway is not None:
        if platform.type not in gw.SERVICE_TYPES:
            kinds = " or ".join(gw.SERVICE_TYPES)
            c.add((*base, "gateway"), f"gateway applies to platform type {kinds}")
        else:
            _check_gateway(c, platform.gateway, platform.type, (*base, "gateway"))
    if platform.type == "local" and platform.external_cidr is not None:
        _check_external_cidr(c, platform.external_cidr, (*base, "externalCidr"))
    if platform.type == "fake":
        # Bounded above too: a huge value passed here, then overflowed a timer.
        for field, value in (("latencyMs", platform.latency_ms), ("jitterMs", platform.jitter_ms)):
            if value < 0:
                c.add((*base, field), "must be >= 0")
            elif value > MAX_FAKE_DELAY_MS:
                c.add((*base, field), f"must be at most {MAX_FAKE_DELAY_MS} (10 minutes)")
        if not 0.0 <= platform.failure_rate < 1.0:
            c.add((*base, "failureRate"), "must be in [0, 1)")


def _check_gateway(c: _Checker, gateway: Gateway, platform: str, base: Path) -> None:
    """A gateway the renderer and the provider can use: an address, the platform's required
    endpoint among its known services, URLs they can forward to, one listen port each."""
    problem = gw.host_problem(gateway.address)
    if problem:
        c.add((*base, "address"), problem)
    _check_endpoints(c, gateway, platform, base)
    for i, cidr in enumerate(gateway.clients):
        problem = _cidr_problem(cidr)
        if problem:
            c.add((*base, "clients", i), problem)
    taken: dict[int, str] = {}
    for service, port in gateway.ports.items():
        if service not in gateway.endpoints:
            hint = did_you_mean(service, gateway.endpoints)
            c.add((*base, "ports", service), f"no endpoint {shown(service)}{hint}")
        elif not 1 <= port <= PORT_MAX:
            c.add((*base, "ports", service), f"port {port} out of range 1..{PORT_MAX}")
    for endpoint in gw.endpoints(gateway):
        port = gw.listen_port(gateway, endpoint)
        first = taken.setdefault(port, endpoint.service)
        if first != endpoint.service:
            where = "ports" if endpoint.service in gateway.ports else "endpoints"
            c.add(
                (*base, where, endpoint.service),
                f"port {port} is already the gateway's port for {first!r}"
                " (name another in gateway.ports)",
            )


def _check_endpoints(c: _Checker, gateway: Gateway, platform: str, base: Path) -> None:
    """The platform's required endpoint is there; each is one of its services, at a URL
    the gateway can forward to (another platform's service is named as such)."""
    required, what = gw.REQUIRED[platform]
    if required not in gateway.endpoints:
        c.add((*base, "endpoints"), f"the {required} endpoint ({what}) is required")
    services = gw.SERVICE_TYPES[platform]
    for service, url in gateway.endpoints.items():
        path: Path = (*base, "endpoints", service)
        if service not in services:
            hint = did_you_mean(service, services)
            elsewhere = [p for p, known in gw.SERVICE_TYPES.items() if service in known]
            if elsewhere and not hint:
                hint = f" for platform type {platform} (it is {elsewhere[0]}'s)"
            c.add(path, f"unknown service type {shown(service)}{hint}")
            continue
        parsed = gw.parse_endpoint(service, url)
        if isinstance(parsed, str):
            c.add(path, parsed)


def _check_external_cidr(c: _Checker, value: str, path: Path) -> None:
    try:
        net = ipaddress.ip_network(value)
    except ValueError:
        c.add(path, f"{value!r} is not an IPv4 network (like 198.18.0.0/24)")
        return
    if net.version != 4 or not 16 <= net.prefixlen <= 28:
        c.add(path, "must be an IPv4 network from /16 to /28")


def _check_networks(c: _Checker) -> dict[str, ipaddress.IPv4Network]:
    """Parse and compare subnets; returns the usable ones by network name."""
    spec = c.cloudlet.spec
    parsed: list[tuple[Path, str, ipaddress.IPv4Network]] = []
    for i, net in enumerate(spec.networks):
        path: Path = ("spec", "networks", i, "cidr")
        subnet = c.network(path, net.cidr)
        if subnet is not None:
            parsed.append((path, net.name, subnet))
    lb_path: Path = ("spec", "lbSubnet")
    lb_subnet = c.network(lb_path, spec.lb_subnet)
    _check_overlaps(c, parsed)
    for path, _, subnet in parsed:
        if spec.data_path == "floating-ip" and lb_subnet and subnet.overlaps(lb_subnet):
            c.add(path, f"{subnet} overlaps lbSubnet ({lb_subnet}) used by the floating-ip path")
    by_name = {name: subnet for _, name, subnet in reversed(parsed)}
    if lb_subnet is not None:
        by_name.setdefault("", lb_subnet)  # "" is no valid network name: the LB subnet's slot
    return by_name


def _check_overlaps(c: _Checker, parsed: list[tuple[Path, str, ipaddress.IPv4Network]]) -> None:
    """A sweep over subnets sorted by start: linear, where pairs would be quadratic."""
    ordered = sorted(enumerate(parsed), key=lambda e: (int(e[1][2].network_address), e[0]))
    widest: tuple[str, ipaddress.IPv4Network] | None = None
    for _, (path, name, subnet) in ordered:
        if widest is not None and subnet.network_address <= widest[1].broadcast_address:
            c.add(path, f"{subnet} overlaps network {widest[0]!r} ({widest[1]})")
        if widest is None or subnet.broadcast_address > widest[1].broadcast_address:
            widest = (name, subnet)


def _check_rules(c: _Checker) -> None:
    for i, group in enumerate(c.cloudlet.spec.security_groups):
        for j, rule in enumerate(group.rules):
            base: Path = ("spec", "securityGroups", i, "rules", j)
            if rule.ports is not None:
                if rule.protocol in ("icmp", "any"):
                    c.add((*base, "ports"), f"ports do not apply to protocol {rule.protocol}")
                else:
                    _check_port_range(c, (*base, "ports"), rule.ports)
            problem = _cidr_problem(rule.remote)
            if problem:
                c.add((*base, "remote"), problem)


def _check_port_range(c: _Checker, path: Path, text: str) -> None:
    match = PORTS_RE.fullmatch(text)
    if match is None:
        c.add(path, f'invalid ports {shown(text)}: expected "N" or "N-M"')
        return
    low = int(match.group(1))
    high = int(match.group(2) or low)
    if not (1 <= low <= PORT_MAX and 1 <= high <= PORT_MAX):
        c.add(path, f"ports {shown(text)} out of range 1..{PORT_MAX}")
    elif low > high:
        c.add(path, f"invalid port range {shown(text)}: {low} > {high}")


def _exposers(c: _Checker) -> list[tuple[Path, str, Expose]]:
    spec = c.cloudlet.spec
    out = [(("spec", "clusters", i), x.name, x.expose) for i, x in enumerate(spec.clusters)]
    out += [(("spec", "vms", i), x.name, x.expose) for i, x in enumerate(spec.vms)]
    return [(path, name, expose) for path, name, expose in out if expose is not None]


def _check_references(c: _Checker) -> None:
    spec = c.cloudlet.spec
    networks = dict.fromkeys(n.name for n in spec.networks)
    groups = dict.fromkeys(g.name for g in spec.security_groups)
    lbs = dict.fromkeys(lb.name for lb in spec.load_balancers)
    placed: list[tuple[Path, str, list[str]]] = []
    groups_by_key: tuple[tuple[str, Sequence[_Placed]], ...] = (
        ("loadBalancers", spec.load_balancers),
        ("clusters", spec.clusters),
        ("vms", spec.vms),
    )
    for key, items in groups_by_key:
        placed += [(("spec", key, i), x.network, x.security_groups) for i, x in enumerate(items)]
    for base, network, group_refs in placed:
        c.reference((*base, "network"), network, networks, "network")
        for j, group in enumerate(group_refs):
            c.reference((*base, "securityGroups", j), group, groups, "security group")
            if group in group_refs[:j]:
                c.add((*base, "securityGroups", j), f"security group {group!r} is listed twice")
    for base, _, expose in _exposers(c):
        c.reference((*base, "expose", "loadBalancer"), expose.load_balancer, lbs, "load balancer")


def _check_counts(c: _Checker) -> None:
    for i, cluster in enumerate(c.cloudlet.spec.clusters):
        if not 1 <= cluster.masters <= MASTERS_MAX:
            c.add(("spec", "clusters", i, "masters"), f"must be in 1..{MASTERS_MAX}")
        if not 0 <= cluster.workers <= WORKERS_MAX:
            c.add(("spec", "clusters", i, "workers"), f"must be in 0..{WORKERS_MAX}")


def _check_exposure(c: _Checker) -> None:
    """Ports in range, once per target; dedicated LBs cannot remap a clash."""
    dedicated = {lb.name for lb in c.cloudlet.spec.load_balancers if lb.type == "dedicated"}
    claimed: dict[tuple[str, str, int], str] = {}
    for base, target, expose in _exposers(c):
        seen: set[tuple[str, int]] = set()
        for j, port in enumerate(expose.ports):
            path: Path = (*base, "expose", "ports", j, "port")
            slot = (port.protocol, port.port)
            if not 1 <= port.port <= PORT_MAX:
                c.add(path, f"port {port.port} out of range 1..{PORT_MAX}")
            elif slot in seen:
                c.add(path, f"{port.protocol}/{port.port} is exposed twice")
            elif expose.load_balancer in dedicated:
                owner = claimed.setdefault((expose.load_balancer, *slot), target)
                if owner != target:
                    c.add(
                        path,
                        f"{port.protocol}/{port.port} on dedicated load balancer "
                        f"{expose.load_balancer!r} is already taken by {owner!r} "
                        "(a dedicated LB forwards ports unchanged; use a shared LB to remap)",
                    )
            seen.add(slot)


def _demand(c: _Checker) -> dict[str, int]:
    """Addresses each network must hold; "" is the floating-ip LB subnet."""
    spec = c.cloudlet.spec
    demand: dict[str, int] = {}

    def place(network: str, count: int) -> None:
        demand[network] = demand.get(network, 0) + count

    for vm in spec.vms:
        place(vm.network, 1)
    for cluster in spec.clusters:
        place(cluster.network, cluster.masters + cluster.workers + int(cluster.vip))
    for lb in spec.load_balancers:
        members = 2 if lb.redundancy == "vip" else 1
        if spec.data_path == "no-router":
            place(lb.network, members)  # one internal leg per member; the VIP is external
        elif spec.data_path == "floating-ip":
            place("", members + int(lb.redundancy == "vip"))
    return demand


def _check_capacity(c: _Checker, subnets: dict[str, ipaddress.IPv4Network]) -> None:
    spec = c.cloudlet.spec
    paths: dict[str, Path] = {"": ("spec", "lbSubnet")}
    for i, net in enumerate(spec.networks):
        paths.setdefault(net.name, ("spec", "networks", i, "cidr"))
    for name, needed in _demand(c).items():
        subnet = subnets.get(name)
        if subnet is None or name not in paths:
            continue
        room = subnet.num_addresses - RESERVED_ADDRESSES
        if needed > room:
            what = f"network {name!r}" if name else "lbSubnet"
            fits = f"{room} address{'es' * (room != 1)}"
            c.add(paths[name], f"{what} ({subnet}) has room for {fits}, {needed} needed")


def validate(cloudlet: Cloudlet, locate: Locate = _no_location) -> list[Problem]:
    """Every semantic problem of one document, each located at its value."""
    checker = _Checker(cloudlet, locate)
    _check_header(checker)
    _check_names(checker)
    _check_platform(checker)
    subnets = _check_networks(checker)
    _check_rules(checker)
    _check_references(checker)
    _check_counts(checker)
    _check_exposure(checker)
    _check_capacity(checker, subnets)
    return checker.problems


def validate_documents(
    cloudlets: Sequence[Cloudlet], locates: Sequence[Locate] | None = None
) -> list[Problem]:
    """Checks across the documents of one file: each names a distinct cloudlet."""
    problems: list[Problem] = []
    seen: set[str] = set()
    for i, cloudlet in enumerate(cloudlets):
        locate = locates[i] if locates is not None else _no_location
        if cloudlet.name in seen:
            message = f"metadata.name: cloudlet {cloudlet.name!r} is defined twice in this file"
            problems.append((locate(("metadata", "name")), message))
        seen.add(cloudlet.name)
    return problems
