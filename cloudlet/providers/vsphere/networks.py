"""``network/N``: a distributed port group ``<owner>.<N>`` on the site's switch.

Port groups are real vSphere objects: VMs' NICs plug into them. The engine
never reconfigures one (govmomi 0.24.2's ``ReconfigureDVPortgroup_Task``
resets every field the spec leaves unset, and a partial spec is all an
update would send); a network has no mutable attribute anyway, so an update
only rewrites the tags' record. The simulator also accepts destroying a port
group that VMs still use, leaving dangling references, so the delete checks
for such VMs itself and refuses with a transient conflict, as vCenter does.
"""

from __future__ import annotations

import contextlib
from typing import Any

from cloudlet.model.resources import Observed, Resource
from cloudlet.providers.vsphere import fields, names
from cloudlet.providers.vsphere.faults import conflict, is_gone, permanent
from cloudlet.providers.vsphere.inventory import children, read, retrieve
from cloudlet.providers.vsphere.sdk import vim
from cloudlet.providers.vsphere.session import Session, encode_record
from cloudlet.providers.vsphere.site import PORTS
from cloudlet.providers.vsphere.snapshot import Snapshot

PG = vim.dvs.DistributedVirtualPortgroup


class Networks:
    def __init__(self, session: Session) -> None:
        self._session = session

    def _find(self, name: str) -> tuple[Any, dict[str, str]] | None:
        """The switch's port group called ``name`` and its tags (one call)."""
        switch = self._session.resolved().switch
        listed = retrieve(
            self._session.content,
            [children(switch, "portgroup", vim.DistributedVirtualSwitch)],
            {PG: ["name", "customValue"]},
        )
        for ref, props in listed:
            if props.get("name") == name:
                return ref, self._session.fields.decode(props.get("customValue"))
        return None

    def create(self, owner: str, resource: Resource) -> Observed:
        name = names.portgroup_name(owner, resource.name)
        found = self._find(name)
        if found is not None:
            ref, tags = found
            if tags.get(fields.ID) == resource.id and tags.get(fields.OWNER) == owner:
                return Observed(ref._moId, resource.id, "network", resource.attrs, resource.deps)
            if tags.get(fields.ID):
                raise permanent(f"{resource.id}: port group {name!r} belongs to someone else")
        else:
            ref = self._add(name, owner, resource.id)
        record = encode_record(resource.attrs, resource.deps)
        self._session.tag(ref, owner, resource.id, record)
        return Observed(ref._moId, resource.id, "network", resource.attrs, resource.deps)

    def _add(self, name: str, owner: str, rid: str) -> Any:
        spec = PG.ConfigSpec(
            name=name,
            type="earlyBinding",
            numPorts=PORTS,
            autoExpand=True,
            description=f"cloudlet {owner}: {rid}",
        )
        switch = self._session.resolved().switch
        # DuplicateName: an earlier attempt made it; adopt it below.
        with contextlib.suppress(vim.fault.DuplicateName):
            self._session.wait(switch.AddDVPortgroup_Task([spec]), f"{rid}: add port group")
        found = self._find(name)  # AddDVPortgroup_Task returns no reference
        if found is None:
            raise permanent(f"{rid}: port group {name!r} was added but cannot be found")
        return found[0]

    def update(self, owner: str, resource: Resource, current: Observed) -> Observed:
        ref = PG(current.uid, self._session.stub)
        try:
            tags = self._session.fields.decode(
                read(self._session.content, ref, ["customValue"]).get("customValue")
            )
        except Exception as err:
            if is_gone(err):
                raise permanent(f"{resource.id}: not found (uid {current.uid})") from err
            raise
        if tags.get(fields.ID) != resource.id:
            raise permanent(f"{resource.id}: not found (uid {current.uid} is not tagged so)")
        self._session.set_record(ref, encode_record(resource.attrs, resource.deps))
        return Observed(current.uid, resource.id, "network", resource.attrs, resource.deps)

    def delete(self, snap: Snapshot, current: Observed) -> None:
        ref = PG(current.uid, self._session.stub)
        try:
            attached = read(self._session.content, ref, ["vm"]).get("vm") or []
        except Exception as err:
            if is_gone(err):
                return
            raise
        users = {v._moId for v in attached}
        users |= {i.observed.uid for i in snap.items if current.uid in i.facts.get("networks", ())}
        if users:
            shown = ", ".join(sorted(users)[:3])
            raise conflict(f"{current.id}: conflict: port group still used by VMs {shown}")
        try:
            self._session.wait(ref.Destroy_Task(), f"{current.id}: delete port group")
        except Exception as err:
            if not is_gone(err):
                raise
