"""Kinds vSphere has no object for, kept as records in the owner's folder.

Routers, security groups, subnets, ports, VIPs, floating IPs, Kubernetes
node joins, load balancers and their listeners are each an empty folder
named after the engine id inside ``cloudlet-<owner>``, carrying the owner/id
tags and a JSON record of the attributes (and computed address) as custom
attributes. A folder name is unique in its parent, which makes creating one
idempotent, and the tags make it found again after a crash. What they stand
for happens elsewhere: a port becomes a NIC with a static address when its
VM is built; the rest is configuration the guests (LB and Kubernetes
images) read, since the vSphere API has nothing to enforce it. Every change
to an LB's records also rewrites each member VM's own LB document, resolved
to addresses, in its ``guestinfo`` (``lbdocs.py``): what the LB agent reads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cloudlet.lb.members import lbs_using
from cloudlet.model.kinds import ADDRESSED, immutable_refusal, refs, with_computed
from cloudlet.model.resources import Observed, Resource
from cloudlet.providers.vsphere import fields, names
from cloudlet.providers.vsphere.addresses import Addresses
from cloudlet.providers.vsphere.faults import is_gone, permanent
from cloudlet.providers.vsphere.folders import OwnerFolders
from cloudlet.providers.vsphere.handler import FolderKindHandler
from cloudlet.providers.vsphere.inventory import find_child, made_or_found, read
from cloudlet.providers.vsphere.lbdocs import Documents
from cloudlet.providers.vsphere.sdk import vim
from cloudlet.providers.vsphere.session import Session, decode_record, encode_record
from cloudlet.providers.vsphere.snapshot import Snapshot


class Records(FolderKindHandler):
    def __init__(
        self,
        session: Session,
        folders: OwnerFolders,
        addresses: Addresses,
        snapshot: Callable[..., Snapshot],
    ) -> None:
        super().__init__(session, folders, addresses, snapshot)
        self._documents = Documents(session, snapshot)

    def _lb_changed(self, owner: str, rid: str | None, deps: Any, former: Any) -> None:
        """Re-write the documents of the LB that ``rid`` (an lb or a listener) is part of."""
        kind = (rid or "").partition("/")[0]
        lb = rid if kind == "lb" else next((d for d in deps if d.startswith("lb/")), None)
        if kind in ("lb", "lb-listener") and lb is not None:
            self._documents.refresh(owner, lb, refs(former, "members") if kind == "lb" else ())

    def vm_changed(self, owner: str, vm_id: str, before: Snapshot) -> None:
        """Re-write the documents of every LB ``vm_id`` is a member or target of,
        as ``before`` (records read before the VM was made or changed) has them.

        A member or target re-made alone (deleted behind our back) leaves its
        LB's records as they are, so no record write would: a member would
        have no document, a target re-made on a new port a stale address."""
        for lb in lbs_using(vm_id, before.observed()):
            self._documents.refresh(owner, lb)

    def _read(self, ref: Any) -> tuple[dict[str, str], tuple[dict[str, Any], list[str]] | None]:
        tags = self._session.fields.decode(
            read(self._session.content, ref, ["customValue"]).get("customValue")
        )
        return tags, decode_record(tags.get(fields.RECORD))

    def create(self, owner: str, resource: Resource) -> Observed:
        if resource.kind not in ADDRESSED:
            made = self._create(owner, resource, None)
            self._lb_changed(owner, resource.id, resource.deps, {})
            return made
        with self._addresses.pool_lock(owner, resource):
            return self._create(owner, resource, self._snapshot(owner, vms=False, portgroups=False))

    def _create(self, owner: str, resource: Resource, snap: Snapshot | None) -> Observed:
        content = self._session.content
        with self._folders.using(owner) as folder:
            name = names.record_name(resource.id)
            ref = find_child(content, folder, name)
            if ref is not None:
                tags, record = self._read(ref)
                if (
                    record
                    and tags.get(fields.ID) == resource.id
                    and tags.get(fields.OWNER) == owner
                ):
                    return Observed(ref._moId, resource.id, resource.kind, record[0], record[1])
            values = dict(resource.attrs)
            if snap is not None:
                values["address"] = self._addresses.allocate(snap, resource)
            if ref is None:
                ref = made_or_found(
                    lambda: folder.CreateFolder(name), lambda: find_child(content, folder, name)
                )
            self._session.tag(ref, owner, resource.id, encode_record(values, resource.deps))
        return Observed(ref._moId, resource.id, resource.kind, values, resource.deps)

    def update(self, owner: str, resource: Resource, current: Observed) -> Observed:
        ref = vim.Folder(current.uid, self._session.stub)
        try:
            tags, record = self._read(ref)
        except Exception as err:
            if is_gone(err):
                raise permanent(f"{resource.id}: not found (uid {current.uid})") from err
            raise
        if record is None or tags.get(fields.ID) != resource.id:
            raise permanent(f"{resource.id}: not found (uid {current.uid} holds no record)")
        old = record[0]
        refusal = immutable_refusal(resource, old)
        if refusal is not None:
            raise permanent(refusal)
        values = with_computed(resource.kind, resource.attrs, old)
        self._session.set_record(ref, encode_record(values, resource.deps))
        self._lb_changed(owner, resource.id, resource.deps, old)
        return Observed(current.uid, resource.id, resource.kind, values, resource.deps)

    def delete(self, owner: str, current: Observed) -> None:
        ref = vim.Folder(current.uid, self._session.stub)
        try:
            self._session.wait(ref.Destroy_Task(), f"{current.id}: delete")
        except Exception as err:
            if not is_gone(err):
                raise
        self._lb_changed(owner, current.id, current.deps, current)
