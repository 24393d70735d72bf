"""Render an expansion as a Heat (HOT) template for sites whose API is internal.

The operator runs the template inside the site; it holds the same resources
and dependencies the engine would create, named and (where Heat takes tags)
tagged the same way, so a later switch to the engine adopts them instead of
duplicating them (floating IPs excepted: Heat gives them neither). Objects with no
Neutron/Nova counterpart (k8s nodes, LB records, listeners) become
``OS::Heat::Value`` resources carrying their attributes and dependencies.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import attrs

from cloudlet.model.expand import Expansion
from cloudlet.model.kinds import is_external, refs
from cloudlet.model.resources import Resource
from cloudlet.providers.openstack import marks
from cloudlet.providers.openstack.rules import rule_fields

HEAT_VERSION = "2018-08-31"
#: The platform VM's resource name (``export heat --platform-vm``).
PLATFORM_VM = "cloudlet_platform_vm"
DEFAULT_ETHERTYPE = ("ethertype", "IPv4")


def heat_name(rid: str) -> str:
    kind, _, name = rid.partition("/")
    return re.sub(r"[^A-Za-z0-9-]", "_", f"{kind}__{name}")


def _ref(rid: str) -> dict[str, str]:
    return {"get_resource": heat_name(rid)}


def _ip_of(rid: str) -> dict[str, list[Any]]:
    return {"get_attr": [heat_name(rid), "fixed_ips", 0, "ip_address"]}


def _network_of(r: Resource, subnets: dict[str, str]) -> Any:
    if is_external(r):
        return {"get_param": "external_network"}
    return _ref(subnets[str(r.attrs["subnet"])])


def _port(r: Resource, owner: str, subnets: dict[str, str]) -> dict[str, Any]:
    props: dict[str, Any] = {
        "name": marks.object_name(owner, r.id),
        "network": _network_of(r, subnets),
        "tags": marks.tags_for(owner, r.id, r.deps),
    }
    if r.attrs.get("subnet"):
        props["fixed_ips"] = [{"subnet": _ref(str(r.attrs["subnet"]))}]
    groups = refs(r, "securityGroups")
    if r.kind == "port" and not groups:
        # no group: not filtered, as the engine makes it (port security off,
        # which takes no group and no address pair; every address passes)
        props["port_security_enabled"] = False
        return {"type": "OS::Neutron::Port", "properties": props}
    if groups:
        props["security_groups"] = [_ref(g) for g in groups]
    pairs = refs(r, "allowedAddressPairs")
    if pairs:
        props["allowed_address_pairs"] = [{"ip_address": _ip_of(v)} for v in pairs]
    return {"type": "OS::Neutron::Port", "properties": props}


def _rules(r: Resource) -> list[dict[str, Any]]:
    """Each rule's Neutron fields, less what Heat defaults (IPv4, any protocol, all ports)."""
    return [
        {
            k: v
            for k, v in rule_fields(text).items()
            if v is not None and (k, v) != DEFAULT_ETHERTYPE
        }
        for text in refs(r, "rules")
    ]


def _render(r: Resource, owner: str, subnets: dict[str, str]) -> dict[str, Any]:
    tags = marks.tags_for(owner, r.id, r.deps)
    name = marks.object_name(owner, r.id)
    kind = r.kind
    simple: dict[str, Callable[[], dict[str, Any]]] = {
        "network": lambda: {"type": "OS::Neutron::Net", "properties": {"name": name, "tags": tags}},
        "subnet": lambda: {
            "type": "OS::Neutron::Subnet",
            "properties": {
                "name": name,
                "network": _ref(str(r.attrs["network"])),
                "cidr": r.attrs["cidr"],
                "tags": tags,
            },
        },
        "router": lambda: {
            "type": "OS::Neutron::Router",
            "properties": {
                "name": name,
                "external_gateway_info": {"network": {"get_param": "external_network"}},
                "tags": tags,
            },
        },
        "security-group": lambda: {
            "type": "OS::Neutron::SecurityGroup",
            "properties": {"name": name, "rules": _rules(r)},
        },
        "port": lambda: _port(r, owner, subnets),
        "vip": lambda: _port(r, owner, subnets),
        "vm": lambda: {
            "type": "OS::Nova::Server",
            "properties": {
                "name": f"{owner}.{r.name}",
                "image": r.attrs["image"],
                "flavor": r.attrs["flavor"],
                "networks": [{"port": _ref(p)} for p in refs(r, "ports")],
                "metadata": marks.server_metadata(owner, r.id, refs(r, "ports"), r.deps),
                "tags": [marks.owner_tag(owner)],
            },
        },
        "floating-ip": lambda: {
            "type": "OS::Neutron::FloatingIP",
            "properties": {
                "floating_network": {"get_param": "external_network"},
                "port_id": _ref(str(r.attrs["target"])),
            },
        },
    }
    if kind in simple:
        return simple[kind]()
    value = {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(r.attrs.items())}
    return {
        "type": "OS::Heat::Value",
        "properties": {
            "type": "json",
            "value": {"cloudlet-owner": owner, "cloudlet-id": r.id, **value},
        },
    }


@attrs.frozen
class PlatformVM:
    """The site's platform VM, booted with ``user_data`` (cloudlet's onboarding)."""

    image: str
    flavor: str
    network: str
    user_data: str


def _platform_vm(vm: PlatformVM, expansion: Expansion) -> dict[str, Any]:
    """A network the cloudlet defines is referenced (and waited for); any
    other name is one the site already has. Untagged on purpose: the VM that
    runs the engine is no object of the cloudlet's, so an engine adopting the
    stack never takes it for one it should delete."""
    ours = [r.id for r in expansion.resources if r.kind == "network" and r.name == vm.network]
    body: dict[str, Any] = {
        "type": "OS::Nova::Server",
        "properties": {
            "name": f"{expansion.cloudlet}.platform",
            "image": vm.image,
            "flavor": vm.flavor,
            "networks": [{"network": _ref(ours[0]) if ours else vm.network}],
            "user_data_format": "RAW",
            "user_data": vm.user_data,
        },
    }
    if ours:
        body["depends_on"] = [heat_name(ours[0])]
    return body


def render_heat(
    expansion: Expansion, external_network: str = "public", platform_vm: PlatformVM | None = None
) -> dict[str, Any]:
    subnets = {r.id: str(r.attrs["network"]) for r in expansion.resources if r.kind == "subnet"}
    resources: dict[str, Any] = {}
    for r in expansion.resources:
        body = _render(r, expansion.cloudlet, subnets)
        if r.deps:
            body["depends_on"] = [heat_name(d) for d in r.deps]
        resources[heat_name(r.id)] = body
        if r.kind == "router":
            for i, sub in enumerate(refs(r, "interfaces")):
                resources[f"{heat_name(r.id)}__if{i}"] = {
                    "type": "OS::Neutron::RouterInterface",
                    "properties": {"router": _ref(r.id), "subnet": _ref(sub)},
                }
    if platform_vm is not None:
        resources[PLATFORM_VM] = _platform_vm(platform_vm, expansion)
    return {
        "heat_template_version": HEAT_VERSION,
        "description": f"cloudlet {expansion.cloudlet}, rendered by cloudlet export heat",
        "parameters": {
            "external_network": {
                "type": "string",
                "default": external_network,
                "description": "the site's external network",
            }
        },
        "resources": resources,
        "outputs": {
            m.load_balancer + "_" + m.target + "_" + str(m.port): {
                "description": f"{m.protocol}/{m.port} of {m.target} on LB {m.load_balancer}",
                "value": m.public_port,
            }
            for m in expansion.port_mappings
        },
    }
