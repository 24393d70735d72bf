"""Networks, subnets, routers, security groups, ports, VIPs and floating IPs.

Each create first looks for the object by its name (``<owner>:<id>``), so a
retried or re-run create adopts what an earlier attempt made, tagged or
not, then converges the mutable attributes: a create is always safe to
repeat. Updates change what can change in place (router interfaces, rules
one by one, a port's groups and address pairs, a floating IP's target).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cloudlet.model.kinds import refs
from cloudlet.model.resources import Observed, Resource
from cloudlet.providers.openstack import marks
from cloudlet.providers.openstack.faults import is_gone, permanent
from cloudlet.providers.openstack.rules import rule_fields, rule_text
from cloudlet.providers.openstack.snapshot import INTERFACE_OWNER, Snapshot

Lister = Callable[..., Any]
#: Each kind's name in the SDK's ``get_<name>`` and ``delete_<name>``.
SDK_NAME = {
    "network": "network",
    "subnet": "subnet",
    "router": "router",
    "security-group": "security_group",
    "port": "port",
    "vip": "port",
    "floating-ip": "ip",
}


class Neutron:
    def __init__(self, conn: Any) -> None:
        self._net = conn.network

    # -- shared ---------------------------------------------------------------

    def _adopt(self, lister: Lister, owner: str, resource: Resource, by: str = "name") -> Any:
        """The object an earlier attempt made for ``resource``, tagged now; or None."""
        name = marks.object_name(owner, resource.id)
        for obj in lister(**{by: name}):
            tag_owner, rid, _ = marks.parse_tags(obj.tags or ())
            if tag_owner in (None, owner) and rid in (None, resource.id):
                self._tag(obj, owner, resource)
                return obj
        return None

    def _tag(self, obj: Any, owner: str, resource: Resource) -> None:
        wanted = marks.tags_for(owner, resource.id, resource.deps)
        if sorted(obj.tags or ()) != sorted(wanted):
            self._net.set_tags(obj, wanted)
            obj.tags = wanted

    def _made(self, obj: Any, owner: str, resource: Resource) -> Any:
        self._tag(obj, owner, resource)
        return obj

    # -- create ---------------------------------------------------------------

    def create(self, owner: str, resource: Resource, snap: Snapshot) -> Any:
        """The object, made or adopted, with every attribute converged."""
        kind = resource.kind
        if kind == "network":
            return self._create_network(owner, resource)
        if kind == "subnet":
            return self._create_subnet(owner, resource, snap)
        if kind == "router":
            router = self._create_router(owner, resource, snap)
            self._converge_router(router, resource, snap)
            return router
        if kind == "security-group":
            group = self._create_group(owner, resource)
            self._converge_rules(group, refs(resource, "rules"))
            return group
        if kind in ("port", "vip"):
            return self._create_port(owner, resource, snap)
        if kind == "floating-ip":
            return self._create_ip(owner, resource, snap)
        raise permanent(f"{resource.id}: not a Neutron kind")

    def _create_network(self, owner: str, resource: Resource) -> Any:
        found = self._adopt(self._net.networks, owner, resource)
        if found is not None:
            return found
        name = marks.object_name(owner, resource.id)
        return self._made(self._net.create_network(name=name), owner, resource)

    def _create_subnet(self, owner: str, resource: Resource, snap: Snapshot) -> Any:
        found = self._adopt(self._net.subnets, owner, resource)
        if found is not None:
            return found
        made = self._net.create_subnet(
            name=marks.object_name(owner, resource.id),
            network_id=snap.uid(str(resource.attrs["network"])),
            cidr=str(resource.attrs["cidr"]),
            ip_version=6 if ":" in str(resource.attrs["cidr"]) else 4,
        )
        return self._made(made, owner, resource)

    def _create_router(self, owner: str, resource: Resource, snap: Snapshot) -> Any:
        found = self._adopt(self._net.routers, owner, resource)
        if found is not None:
            return found
        gateway = {"network_id": snap.external_id} if resource.attrs.get("external") else None
        made = self._net.create_router(
            name=marks.object_name(owner, resource.id), external_gateway_info=gateway
        )
        return self._made(made, owner, resource)

    def _create_group(self, owner: str, resource: Resource) -> Any:
        found = self._adopt(self._net.security_groups, owner, resource)
        if found is not None:
            return self._net.get_security_group(found.id)
        name = marks.object_name(owner, resource.id)
        made = self._net.create_security_group(name=name, description=f"cloudlet {owner}")
        return self._made(made, owner, resource)

    def _port_fields(self, resource: Resource, snap: Snapshot) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        subnet = resource.attrs.get("subnet")
        if subnet:
            sub = snap.uid(str(subnet))
            network = next((s.network_id for s in snap.subnets if s.id == sub), None)
            if network is None:
                raise permanent(f"{resource.id}: subnet {subnet} has no network")
            fields.update(network_id=network, fixed_ips=[{"subnet_id": sub}])
        else:
            fields["network_id"] = snap.uid(str(resource.attrs.get("network")))
        if resource.kind == "port":
            # Only what is set: Neutron's policy checks an address-pairs
            # field even when empty, and refuses it on a network the project
            # does not own (the shared external one) to all but admins; the
            # same goes for port security off (a port with no group there).
            fields.update(self._port_changes(resource, snap, None))
        return fields

    def _port_changes(self, resource: Resource, snap: Snapshot, port: Any) -> dict[str, Any]:
        """What ``port`` (None: a new one) lacks: its groups and address pairs,
        or, for a port with no group, port security off.

        A port with no group is not filtered (cloudlet's meaning on every
        platform), which Neutron spells ``port_security_enabled: false``: an
        empty group list with port security on would drop all its traffic.
        Neutron refuses address pairs on such a port, and needs none (it
        then lets every address through), so its pairs are left out."""
        groups = sorted(snap.uid(g) for g in refs(resource, "securityGroups"))
        secured = bool(groups)
        pairs = sorted(snap.address_of(v) for v in refs(resource, "allowedAddressPairs"))
        pairs = pairs if secured else []
        out: dict[str, Any] = {}
        # a new port: Neutron's defaults are port security on and, with no
        # group given, the project's default group (none once security is off)
        have_secured = bool(port.is_port_security_enabled) if port else True
        if have_secured != secured:
            out["port_security_enabled"] = secured
        have_groups = sorted(port.security_group_ids or ()) if port else []
        if have_groups != groups:
            out["security_group_ids"] = groups
        have = sorted(a["ip_address"] for a in (port.allowed_address_pairs or [])) if port else []
        if have != pairs:
            out["allowed_address_pairs"] = [{"ip_address": a} for a in pairs]
        return out

    def _update_port(self, port: Any, resource: Resource, snap: Snapshot) -> Any:
        changes = self._port_changes(resource, snap, port)
        return self._net.update_port(port, **changes) if changes else port

    def _create_port(self, owner: str, resource: Resource, snap: Snapshot) -> Any:
        fields = self._port_fields(resource, snap)
        found = self._adopt(self._net.ports, owner, resource)
        if found is not None:
            if resource.kind == "port":
                return self._update_port(found, resource, snap)
            return found
        fields["name"] = marks.object_name(owner, resource.id)
        return self._made(self._net.create_port(**fields), owner, resource)

    def _create_ip(self, owner: str, resource: Resource, snap: Snapshot) -> Any:
        target = snap.uid(str(resource.attrs["target"]))
        # Floating IPs have no name: the description stands for it.
        found = self._adopt(self._net.ips, owner, resource, by="description")
        if found is None:
            found = self._net.create_ip(
                floating_network_id=snap.external_id,
                port_id=target,
                description=marks.object_name(owner, resource.id),
            )
            return self._made(found, owner, resource)
        if found.port_id != target:
            self._net.update_ip(found, port_id=target)
        return found

    # -- update ---------------------------------------------------------------

    def update(self, resource: Resource, current: Observed, snap: Snapshot) -> Any:
        kind = resource.kind
        try:
            obj = getattr(self._net, f"get_{SDK_NAME[kind]}")(current.uid)
        except Exception as err:
            if is_gone(err):
                raise permanent(f"{resource.id}: not found (uuid {current.uid})") from err
            raise
        owner = snap.owner
        self._tag(obj, owner, resource)
        if kind == "router":
            gateway = {"network_id": snap.external_id} if resource.attrs.get("external") else {}
            if bool(obj.external_gateway_info) != bool(gateway):
                self._net.update_router(obj, external_gateway_info=gateway)
            self._converge_router(obj, resource, snap)
        elif kind == "security-group":
            self._converge_rules(obj, refs(resource, "rules"))
        elif kind == "port":
            obj = self._update_port(obj, resource, snap)
        elif kind == "floating-ip":
            target = snap.uid(str(resource.attrs["target"]))
            if obj.port_id != target:
                obj = self._net.update_ip(obj, port_id=target)
        return obj

    def _converge_router(self, router: Any, resource: Resource, snap: Snapshot) -> None:
        wanted = {snap.uid(s) for s in refs(resource, "interfaces")}
        have: set[str] = set()
        for port in self._net.ports(device_id=router.id, device_owner=INTERFACE_OWNER):
            have |= {ip["subnet_id"] for ip in port.fixed_ips or []}
        for subnet in sorted(wanted - have):
            self._net.add_interface_to_router(router, subnet=subnet)
        for subnet in sorted(have - wanted):
            self._remove_interface(router, subnet)

    def _remove_interface(self, router: Any, subnet: str) -> None:
        try:
            self._net.remove_interface_from_router(router, subnet=subnet)
        except Exception as err:
            if not is_gone(err):
                raise

    def _converge_rules(self, group: Any, rules: tuple[str, ...]) -> None:
        """Delete the rules not wanted (Neutron's default egress ones too), add the missing."""
        have: dict[str, list[str]] = {}
        for rule in group.security_group_rules or []:
            have.setdefault(rule_text(rule), []).append(rule["id"])
        for text, ids in sorted(have.items()):
            for rule_id in ids if text not in rules else ids[1:]:
                try:
                    self._net.delete_security_group_rule(rule_id, ignore_missing=True)
                except Exception as err:
                    if not is_gone(err):
                        raise
        for text in sorted(set(rules) - set(have)):
            self._net.create_security_group_rule(security_group_id=group.id, **rule_fields(text))

    # -- delete ---------------------------------------------------------------

    def delete(self, current: Observed, snap: Snapshot) -> None:
        kind, uid = current.kind, current.uid
        if kind == "router":
            for port in snap.interfaces.get(uid, []):
                for ip in port.fixed_ips or []:
                    self._remove_interface(uid, ip["subnet_id"])
        getattr(self._net, f"delete_{SDK_NAME[kind]}")(uid, ignore_missing=True)
