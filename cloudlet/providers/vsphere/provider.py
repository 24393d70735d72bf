"""The ``vsphere`` platform's provider: the Provider seam over pyVmomi.

It routes each kind to its mapping (port groups, VMs, records), turns every
SDK or socket failure into a ``ProviderError``, logs in again when vCenter
reports the session expired, and adds the checks a cloud would make itself:
nothing is deleted while another of the owner's objects still depends on it
(a transient conflict, as the fake cloud and OpenStack answer).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from cloudlet.model.kinds import KINDS
from cloudlet.model.resources import Observed, Resource
from cloudlet.model.spec import Platform
from cloudlet.providers.vsphere.addresses import Addresses
from cloudlet.providers.vsphere.config import VsphereConfig, load_config
from cloudlet.providers.vsphere.faults import conflict, permanent, translated
from cloudlet.providers.vsphere.folders import OwnerFolders
from cloudlet.providers.vsphere.networks import Networks
from cloudlet.providers.vsphere.records import Records
from cloudlet.providers.vsphere.sdk import vim
from cloudlet.providers.vsphere.session import Session
from cloudlet.providers.vsphere.snapshot import Snapshot, take
from cloudlet.providers.vsphere.vms import Vms

T = TypeVar("T")


class VsphereProvider:
    def __init__(self, platform: Platform, config: VsphereConfig | None = None) -> None:
        self.config = config or load_config(platform)
        self.session = Session(self.config)
        self._folders = OwnerFolders(self.session)
        addresses = Addresses(self.session)
        self._networks = Networks(self.session)
        self._records = Records(self.session, self._folders, addresses, self.snapshot)
        self._vms = Vms(self.session, self._folders, addresses, self.snapshot)

    def snapshot(self, owner: str, *, vms: bool = True, portgroups: bool = True) -> Snapshot:
        return take(self.session, owner, vms=vms, portgroups=portgroups)

    def _call(self, what: str, work: Callable[[], T]) -> T:
        try:
            with translated(what):
                return work()
        except Exception as err:
            if isinstance(err.__cause__, vim.fault.NotAuthenticated):
                self.session.connection.relogin()  # the session expired
            raise

    def observe(self, owner: str) -> list[Observed]:
        return self._call(f"observe {owner}", lambda: self.snapshot(owner).observed())

    def create(self, owner: str, resource: Resource) -> Observed:
        def work() -> Observed:
            if resource.kind not in KINDS:
                raise permanent(f"{resource.id}: unknown kind {resource.kind!r}")
            if resource.kind == "network":
                return self._networks.create(owner, resource)
            if resource.kind == "vm":
                snap = self.snapshot(owner, vms=False)
                made = self._vms.create(owner, resource, snap)
                self._records.vm_changed(owner, resource.id, snap)
                return made
            return self._records.create(owner, resource)

        return self._call(f"create {resource.id}", work)

    def update(self, owner: str, resource: Resource, current: Observed) -> Observed:
        def work() -> Observed:
            if resource.kind == "network":
                return self._networks.update(owner, resource, current)
            if resource.kind == "vm":
                made = self._vms.update(owner, resource, current)
                snap = self.snapshot(owner, vms=False, portgroups=False)
                self._records.vm_changed(owner, resource.id, snap)
                return made
            return self._records.update(owner, resource, current)

        return self._call(f"update {resource.id}", work)

    def delete(self, owner: str, current: Observed) -> None:
        self._call(f"delete {current.id or current.uid}", lambda: self._delete(owner, current))

    def _delete(self, owner: str, current: Observed) -> None:
        # Only ports (their VMs' NICs) and networks (NICs, subnets) can have
        # dependents that are not records: reading just what can matter
        # keeps a destroy from re-reading every VM for every record.
        snap = self.snapshot(owner, vms=current.kind in ("port", "network"), portgroups=False)
        self._refuse_if_used(owner, current, snap)
        if current.kind == "network":
            self._networks.delete(snap, current)
        elif current.kind == "vm":
            self._vms.delete(current)
        else:
            self._records.delete(owner, current)
        seen = (i.observed.uid for i in snap.items)
        if snap.folder is not None and self._folders.all_gone(owner, current.uid, seen):
            self._folders.remove_if_empty(owner, snap.folder)

    def _refuse_if_used(self, owner: str, current: Observed, snap: Snapshot) -> None:
        """A transient conflict while another object depends on ``current``.

        A younger duplicate is deleted whatever depends on its id: the
        dependents use the object the planner keeps.
        """
        users = sorted({str(o.id) for o in snap.observed() if current.id in o.deps})
        if current.id is None or not users:
            return
        everything = self.snapshot(owner).observed()
        if any(o.id == current.id and o.uid != current.uid for o in everything):
            return
        raise conflict(f"{current.id}: conflict: still in use by {', '.join(users[:3])}")

    def replacement_reason(self, resource: Resource, current: Observed) -> str | None:
        return None  # a flavor here is CPUs and memory: a reconfigure changes either way

    def close(self) -> None:
        self.session.close()
