"""One read of everything a cloudlet owns, in a handful of filtered list calls.

``observe`` and every reference lookup go through a snapshot: networks,
subnets, routers, security groups (their rules come inline), ports (VIPs
are ports too), floating IPs and servers, each listed once with the owner's
tag, plus the interface ports of the owner's routers. From those lists it
maps cloud uuids to engine ids and back, so attributes are reported in the
model's terms (``subnet/n``, ``vip/lb``) and references resolve to uuids.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import Any

from cloudlet.model.kinds import EXTERNAL
from cloudlet.model.resources import AttrValue, Observed
from cloudlet.providers.openstack import marks
from cloudlet.providers.openstack.faults import transient
from cloudlet.providers.openstack.rules import rule_text

INTERFACE_OWNER = "network:router_interface"


def _engine_id(obj: Any, list_name: str) -> str | None:
    if list_name == "servers":
        return (obj.metadata or {}).get(marks.META_ID)
    return marks.parse_tags(obj.tags or ())[1]


_LISTS = {
    "network": "networks",
    "subnet": "subnets",
    "router": "routers",
    "security-group": "groups",
    "port": "ports",
    "vip": "ports",
    "floating-ip": "ips",
    "vm": "servers",
}


#: A port's ``securityGroups`` when port security is on and it has no group:
#: Neutron then drops all its traffic, which no model value means, so it is
#: drift from ``()`` (not filtered), and the update turns port security off.
DROPS_ALL = "(no group, port security on: all traffic dropped)"


def _unfiltered(port: Any) -> dict[str, AttrValue]:
    """How a port with no group reads in the model's terms.

    Port security off (cloudlet's "no group"): every address passes, so the
    VIPs the port depends on (its ``cloudlet.dep`` tags) read as its address
    pairs, which Neutron keeps none of on such a port. Port security on with
    no group: ``DROPS_ALL``."""
    if not port.is_port_security_enabled:
        deps = marks.parse_tags(port.tags or ())[2]
        return {"allowedAddressPairs": tuple(d for d in deps if d.startswith("vip/"))}
    if not port.security_group_ids:
        return {"securityGroups": (DROPS_ALL,)}
    return {}


class Snapshot:
    """The owner's objects at one moment; ``uid``/``ref`` translate between the two worlds.

    Each list is read on first use, so a create that resolves two references
    reads two lists, and only ``observed`` reads them all.
    """

    def __init__(self, conn: Any, owner: str, external_id: str, catalog: Any) -> None:
        self.owner = owner
        self.external_id = external_id
        self.catalog = catalog
        self._conn = conn
        self._tag = marks.owner_tag(owner)
        self._uids: dict[str, dict[str, str]] = {}  # list name -> engine id -> oldest uuid

    @cached_property
    def networks(self) -> list[Any]:
        return list(self._conn.network.networks(tags=self._tag))

    @cached_property
    def subnets(self) -> list[Any]:
        return list(self._conn.network.subnets(tags=self._tag))

    @cached_property
    def routers(self) -> list[Any]:
        return list(self._conn.network.routers(tags=self._tag))

    @cached_property
    def groups(self) -> list[Any]:
        return list(self._conn.network.security_groups(tags=self._tag))

    @cached_property
    def ports(self) -> list[Any]:
        return list(self._conn.network.ports(tags=self._tag))

    @cached_property
    def ips(self) -> list[Any]:
        return list(self._conn.network.ips(tags=self._tag))

    @cached_property
    def servers(self) -> list[Any]:
        return list(self._conn.compute.servers(details=True, tags=self._tag))

    @cached_property
    def interfaces(self) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {r.id: [] for r in self.routers}
        if out:
            for port in self._conn.network.ports(device_owner=INTERFACE_OWNER):
                if port.device_id in out:
                    out[port.device_id].append(port)
        return out

    def _index(self, name: str) -> dict[str, str]:
        if name not in self._uids:
            index: dict[str, str] = {}
            for obj in sorted(getattr(self, name), key=lambda o: str(o.created_at or "")):
                rid = _engine_id(obj, name)
                if rid:
                    index.setdefault(rid, obj.id)
            self._uids[name] = index
        return self._uids[name]

    @cached_property
    def ids(self) -> dict[str, str]:
        """uuid -> engine id over every list (reads them all)."""
        return {
            obj.id: rid
            for name in sorted(set(_LISTS.values()))
            for obj in getattr(self, name)
            if (rid := _engine_id(obj, name))
        }

    # -- reference resolution -------------------------------------------------

    def uid(self, rid: str) -> str:
        """The uuid of a referenced object; transient if it is not there (yet)."""
        if rid == EXTERNAL:
            return self.external_id
        uid = self._index(_LISTS.get(rid.partition("/")[0], "ports")).get(rid)
        if uid is None:
            raise transient(f"{rid} not found in cloudlet {self.owner!r} (not created yet?)")
        return uid

    def ref(self, uid: str | None) -> str:
        """The engine id for a uuid, or the uuid itself for a foreign object."""
        if not uid:
            return ""
        if uid == self.external_id:
            return EXTERNAL
        return self.ids.get(uid, uid)

    def address_of(self, rid: str) -> str:
        port = next((p for p in self.ports if p.id == self.uid(rid)), None)
        ips = (port.fixed_ips or []) if port is not None else []
        if not ips:
            raise transient(f"{rid} has no address yet")
        return str(ips[0]["ip_address"])

    def server(self, rid: str) -> Any:
        uid = self._index("servers").get(rid)
        return next((s for s in self.servers if s.id == uid), None)

    # -- observation ----------------------------------------------------------

    def prefetch(self) -> None:
        """Read every list at once, on a few threads: observe waits for the slowest, not the sum."""
        names = ("networks", "subnets", "routers", "groups", "ports", "ips", "servers")
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            for future in [pool.submit(getattr, self, n) for n in names]:
                future.result()
        self.interfaces  # noqa: B018 - needs routers first

    def observed(self) -> list[Observed]:
        self.prefetch()
        out = [self._network(n) for n in self.networks]
        out += [self._subnet(s) for s in self.subnets]
        out += [self._router(r) for r in self.routers]
        out += [self._group(g) for g in self.groups]
        out += [self._port(p) for p in self.ports]
        out += [self._ip(f) for f in self.ips]
        for server in self.servers:
            out += self._server(server)
        return out

    def _make(self, obj: Any, kind: str, attrs: dict[str, AttrValue]) -> Observed:
        _, rid, deps = marks.parse_tags(obj.tags or ())
        return Observed(obj.id, rid, kind, attrs, deps)

    def _network(self, net: Any) -> Observed:
        return self._make(net, "network", {})

    def _subnet(self, sub: Any) -> Observed:
        return self._make(sub, "subnet", {"network": self.ref(sub.network_id), "cidr": sub.cidr})

    def _router(self, router: Any) -> Observed:
        gateway = router.external_gateway_info or {}
        subnets = {
            self.ref(ip["subnet_id"])
            for port in self.interfaces.get(router.id, [])
            for ip in port.fixed_ips or []
        }
        attrs: dict[str, AttrValue] = {
            "external": gateway.get("network_id") == self.external_id,
            "interfaces": tuple(sorted(subnets)),
        }
        return self._make(router, "router", attrs)

    def _group(self, group: Any) -> Observed:
        rules = tuple(sorted(rule_text(r) for r in group.security_group_rules or []))
        return self._make(group, "security-group", {"rules": rules})

    def _where(self, port: Any) -> dict[str, AttrValue]:
        if port.network_id == self.external_id:
            return {"network": EXTERNAL}
        ips = port.fixed_ips or []
        return {"subnet": self.ref(ips[0]["subnet_id"]) if ips else ""}

    def _port(self, port: Any) -> Observed:
        rid = marks.parse_tags(port.tags or ())[1]
        ips = port.fixed_ips or []
        attrs = self._where(port)
        attrs["address"] = str(ips[0]["ip_address"]) if ips else ""
        if rid and rid.startswith("vip/"):
            return self._make(port, "vip", attrs)
        vips = {str(p.fixed_ips[0]["ip_address"]): self.ids.get(p.id, "") for p in self._vips()}
        pairs = {
            vips.get(a["ip_address"]) or a["ip_address"] for a in port.allowed_address_pairs or []
        }
        attrs["securityGroups"] = tuple(sorted(self.ref(g) for g in port.security_group_ids or []))
        attrs["allowedAddressPairs"] = tuple(sorted(pairs))
        attrs.update(_unfiltered(port))
        return self._make(port, "port", attrs)

    def _vips(self) -> list[Any]:
        return [p for p in self.ports if self.ids.get(p.id, "").startswith("vip/") and p.fixed_ips]

    def _ip(self, fip: Any) -> Observed:
        attrs: dict[str, AttrValue] = {
            "target": self.ref(fip.port_id),
            "address": str(fip.floating_ip_address or ""),
        }
        return self._make(fip, "floating-ip", attrs)

    def server_ports(self, server: Any) -> tuple[str, ...]:
        """The engine ids of the server's ports, in the order it was built with."""
        attached = {self.ref(p.id) for p in self.ports if p.device_id == server.id}
        meta = server.metadata or {}
        wanted = marks.decode_list(meta.get(marks.META_PORTS))
        if wanted is not None and set(wanted) == attached:
            return wanted
        return tuple(sorted(attached))

    def _server(self, server: Any) -> list[Observed]:
        meta = server.metadata or {}
        rid = meta.get(marks.META_ID)
        flavor = server.flavor
        attrs: dict[str, AttrValue] = {
            "image": self.catalog.image_name(server.image.id if server.image else None),
            "flavor": str(getattr(flavor, "original_name", None) or getattr(flavor, "name", "")),
            "ports": self.server_ports(server),
            "status": str(server.status),
        }
        deps = marks.decode_list(meta.get(marks.META_DEPS)) or ()
        return [Observed(server.id, rid, "vm", attrs, deps), *self._records_on(server)]

    @staticmethod
    def _records_on(server: Any) -> list[Observed]:
        return [
            Observed(f"{server.id}/{rid}", rid, rid.partition("/")[0], values, deps)
            for rid, (values, deps) in marks.records_in(server.metadata or {}).items()
        ]

    def records(self) -> list[Observed]:
        """The records kept on servers (k8s nodes, LBs, listeners): reads the servers only."""
        return [obj for server in self.servers for obj in self._records_on(server)]
