"""The site's fixed inventory: datacenter, cluster, datastore, switch, templates.

Resolved once per provider (by inventory path, a call each) and cached: these
are the operator's objects, which the engine never changes. A name that is
not there is a permanent error naming it, since no retry can create it.
"""

from __future__ import annotations

import threading
from typing import Any

import attrs

from cloudlet.providers.vsphere.config import SiteConfig
from cloudlet.providers.vsphere.faults import permanent
from cloudlet.providers.vsphere.inventory import children, find_path, read, retrieve
from cloudlet.providers.vsphere.sdk import vim

DVS_TYPES = (vim.DistributedVirtualSwitch,)
#: Ports per new distributed port group; early binding with auto-expand grows it.
PORTS = 8


@attrs.frozen
class Network:
    """Where a NIC plugs in: a standard network or a DV port group."""

    ref: Any
    name: str
    switch_uuid: str | None = None
    portgroup_key: str | None = None


@attrs.frozen
class Resolved:
    datacenter: Any
    vm_folder: Any
    network_folder: Any
    pool: Any
    datastore: Any
    switch: Any
    switch_uuid: str


class Site:
    def __init__(self, config: SiteConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._resolved: Resolved | None = None
        self._external: Network | None = None
        self._templates: dict[str, Any] = {}

    def resolved(self, content: Any) -> Resolved:
        with self._lock:
            if self._resolved is None:
                self._resolved = self._resolve(content)
            return self._resolved

    def _must(self, content: Any, path: str, what: str) -> Any:
        found = find_path(content, path)
        if found is None:
            raise permanent(f"vsphere: no {what} at inventory path {path!r}")
        return found

    def _resolve(self, content: Any) -> Resolved:
        dc_name = self.config.datacenter
        dc = self._must(content, dc_name, "datacenter")
        folders = read(content, dc, ["vmFolder", "networkFolder"])
        cluster = self._must(content, f"{dc_name}/host/{self.config.cluster}", "cluster")
        pool = read(content, cluster, ["resourcePool"]).get("resourcePool")
        if pool is None:
            raise permanent(f"vsphere: cluster {self.config.cluster!r} has no resource pool")
        datastore = self._must(content, f"{dc_name}/datastore/{self.config.datastore}", "datastore")
        switch = self._switch(content, folders["networkFolder"])
        uuid = str(read(content, switch, ["uuid"]).get("uuid"))
        return Resolved(
            dc, folders["vmFolder"], folders["networkFolder"], pool, datastore, switch, uuid
        )

    def _switch(self, content: Any, network_folder: Any) -> Any:
        """The configured switch, else the external port group's, else the first one."""
        dc_name = self.config.datacenter
        if self.config.dv_switch:
            return self._must(content, f"{dc_name}/network/{self.config.dv_switch}", "DV switch")
        if self.config.network:
            found = find_path(content, f"{dc_name}/network/{self.config.network}")
            if isinstance(found, vim.dvs.DistributedVirtualPortgroup):
                return read(content, found, ["config.distributedVirtualSwitch"])[
                    "config.distributedVirtualSwitch"
                ]
        listed = retrieve(content, [children(network_folder)], {vim.ManagedEntity: ["name"]})
        found_switches = [obj for obj, _ in listed if isinstance(obj, DVS_TYPES)]
        if not found_switches:
            raise permanent(
                f"vsphere: datacenter {dc_name!r} has no distributed switch; create one "
                "for the cluster's hosts, or name one with dvSwitch in the config file"
            )
        return sorted(found_switches, key=lambda s: s._moId)[0]

    def external(self, content: Any) -> Network:
        """The site network ``@external`` ports attach to (the platform's ``network``)."""
        with self._lock:
            if self._external is None:
                self._external = self._find_external(content)
            return self._external

    def _find_external(self, content: Any) -> Network:
        name = self.config.network
        if not name:
            raise permanent("vsphere: @external ports need the platform's network")
        ref = self._must(content, f"{self.config.datacenter}/network/{name}", "network")
        if isinstance(ref, vim.dvs.DistributedVirtualPortgroup):
            props = read(content, ref, ["key", "config.distributedVirtualSwitch"])
            switch = props["config.distributedVirtualSwitch"]
            uuid = read(content, switch, ["uuid"])["uuid"]
            return Network(ref, name, str(uuid), str(props["key"]))
        return Network(ref, name)

    def template(self, content: Any, image: str) -> Any:
        """The VM or template to clone for ``image``.

        The config file's ``images`` table first, then a VM or template named
        like the image in the datacenter's VM folder, then the platform's
        default ``template``: an operator can start with one template and add
        images later without touching the specs.
        """
        with self._lock:
            if image not in self._templates:
                self._templates[image] = self._find_template(content, image)
            return self._templates[image]

    def _find_template(self, content: Any, image: str) -> Any:
        dc_name = self.config.datacenter
        mapped = self.config.images.get(image)
        if mapped:
            return self._must(content, f"{dc_name}/vm/{mapped}", f"template for image {image!r}")
        named = find_path(content, f"{dc_name}/vm/{image}")
        if isinstance(named, vim.VirtualMachine):
            return named
        return self._must(content, f"{dc_name}/vm/{self.config.template}", "template")
