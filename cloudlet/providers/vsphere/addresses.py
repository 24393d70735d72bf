"""Which addresses are taken, for the allocator in ``ipam``.

A subnet's pool is the owner's own business: its ports and VIPs are in the
owner's snapshot. The external pool (the platform network's addresses, for
``@external`` ports and VIPs and for floating IPs) is shared by every
cloudlet on the site, so it is read from every ``cloudlet-*`` folder, in two
calls. Allocation and recording happen under one lock per pool, so the
threads of one process never hand out an address twice; the engine's
per-cloudlet lock covers subnets across processes, while two processes
syncing different cloudlets could still race for an external address (see
docs/vsphere.md).
"""

from __future__ import annotations

import contextlib
import ipaddress
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cloudlet.model.kinds import ADDRESSED, EXTERNAL, is_external
from cloudlet.model.resources import Resource
from cloudlet.providers.vsphere import fields, names
from cloudlet.providers.vsphere.faults import permanent
from cloudlet.providers.vsphere.inventory import children, retrieve
from cloudlet.providers.vsphere.ipam import gateway, lowest_free, prefix_length
from cloudlet.providers.vsphere.sdk import vim
from cloudlet.providers.vsphere.session import Session, decode_record
from cloudlet.providers.vsphere.snapshot import Snapshot


def _external_pool(resource: Resource) -> bool:
    """Whether ``resource`` takes its address from the site's external pool."""
    return resource.kind == "floating-ip" or is_external(resource)


class Addresses:
    def __init__(self, session: Session) -> None:
        self._session = session
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @contextmanager
    def pool_lock(self, owner: str, resource: Resource) -> Iterator[None]:
        key = EXTERNAL if _external_pool(resource) else f"owner:{owner}"
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            yield

    def subnet_cidr(self, snap: Snapshot, subnet: Any, what: str) -> str:
        item = snap.by_id().get(str(subnet))
        if item is None or not item.observed.attrs.get("cidr"):
            raise permanent(f"{what}: missing dependency {subnet}")
        return str(item.observed.attrs["cidr"])

    def allocate(self, snap: Snapshot, resource: Resource) -> str:
        """A free address for ``resource``; call under ``pool_lock``."""
        if _external_pool(resource):
            cidr = self._session.config.site.external_cidr
            return lowest_free(cidr, self._external_in_use(), resource.id)
        subnet = resource.attrs.get("subnet")
        cidr = self.subnet_cidr(snap, subnet, resource.id)
        used = [
            str(o.attrs.get("address"))
            for o in snap.observed()
            if o.kind in ADDRESSED and o.attrs.get("subnet") == subnet
        ]
        return lowest_free(cidr, used, resource.id)

    def _external_in_use(self) -> list[str]:
        content = self._session.content
        top = retrieve(
            content, [children(self._session.resolved().vm_folder)], {vim.Folder: ["name"]}
        )
        owners = [ref for ref, p in top if str(p.get("name", "")).startswith(names.FOLDER_PREFIX)]
        pool = ipaddress.ip_network(self._session.config.site.external_cidr, strict=False)
        used: list[str] = []
        listed = retrieve(
            content, [children(f) for f in owners], {vim.Folder: ["customValue"]}, missing_ok=True
        )
        for _, props in listed:
            tags = self._session.fields.decode(props.get("customValue"))
            record = decode_record(tags.get(fields.RECORD))
            address = record[0].get("address") if record else None
            with contextlib.suppress(ValueError):
                if isinstance(address, str) and ipaddress.ip_address(address) in pool:
                    used.append(address)
        return used

    def nic_config(self, snap: Snapshot, port: Any) -> dict[str, Any]:
        """The static guest config of one port: address, prefix length, gateway."""
        attrs_ = port.attrs
        if is_external(attrs_):
            cidr = self._session.config.site.external_cidr
        else:
            cidr = self.subnet_cidr(snap, attrs_.get("subnet"), str(port.id))
        return {
            "port": port.id,
            "address": attrs_.get("address"),
            "prefix": prefix_length(cidr),
            "gateway": gateway(cidr),
        }
