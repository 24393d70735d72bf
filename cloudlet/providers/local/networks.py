"""A network on ``local``: a Linux bridge in the cloudlet's fabric namespace."""

from __future__ import annotations

from cloudlet.model.resources import AttrValue
from cloudlet.providers.local import host
from cloudlet.providers.local.records import Record
from cloudlet.providers.local.site import Site


def build(site: Site, network: Record) -> None:
    name = f"b{network.uid}"
    if name not in host.links(site.fabric):
        host.batch(site.fabric, [f"link add {name} type bridge"])
    host.batch(site.fabric, [f"link set {name} up"])


def unbuild(site: Site, network: Record) -> None:
    host.run(["ip", "-n", site.fabric, "link", "del", f"b{network.uid}"], check=False)


def health(site: Site, network: Record, present: set[str]) -> dict[str, AttrValue]:
    if f"b{network.uid}" not in host.links(site.fabric):
        return {"broken": "its bridge is gone"}
    return {}
