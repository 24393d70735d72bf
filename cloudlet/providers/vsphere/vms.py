"""``vm/V``: a clone of the platform's template, sized by flavor, one NIC per port.

govmomi 0.24.2's ``CloneVM_Task`` ignores the clone spec's CPU, memory,
customization and ``powerOn``, so the clone is made bare and powered off,
then reconfigured (size, NICs, guestinfo record), tagged, powered on, and
only then marked with ``guestinfo.cloudlet.owner``/``id``: a VM without the
mark is a build that did not finish, which ``create`` finds by its name and
completes. The VM is never relocated (``RelocateVM_Task`` corrupts the
simulator's host lists); the clone spec's location places it instead.
A flavor change is a reconfigure: in place when the VM grows and has CPU and
memory hot-add enabled, otherwise powered off around it (vCenter refuses a
resize of a running VM without hot-add).
"""

from __future__ import annotations

import contextlib
from typing import Any

from cloudlet.model.kinds import immutable_refusal, is_external, refs
from cloudlet.model.resources import Observed, Resource
from cloudlet.providers.vsphere import devices, names
from cloudlet.providers.vsphere.faults import is_gone, permanent
from cloudlet.providers.vsphere.handler import FolderKindHandler
from cloudlet.providers.vsphere.inventory import made_or_found, named_child, read
from cloudlet.providers.vsphere.sdk import vim
from cloudlet.providers.vsphere.site import Network
from cloudlet.providers.vsphere.snapshot import VM_PROPS, Snapshot, decode_vm

VM = vim.VirtualMachine
HOT_ADD = ("config.cpuHotAddEnabled", "config.memoryHotAddEnabled")


class Vms(FolderKindHandler):
    def _sizes(self, resource: Resource) -> tuple[int, int]:
        flavor = str(resource.attrs.get("flavor"))
        size = self._session.config.site.flavors.get(flavor)
        if size is None:
            known = ", ".join(sorted(self._session.config.site.flavors))
            raise permanent(f"{resource.id}: unknown flavor {flavor!r} (known: {known})")
        return size

    def _plan_nics(self, snap: Snapshot, resource: Resource) -> tuple[list[Network], list[Any]]:
        """Where each port's NIC plugs in, and its static guest config."""
        by_id = snap.by_id()
        switch_uuid = self._session.resolved().switch_uuid
        networks, configs = [], []
        for port_id in refs(resource, "ports"):
            port = by_id.get(port_id)
            if port is None:
                raise permanent(f"{resource.id}: missing dependency {port_id}")
            attrs_ = port.observed.attrs
            if is_external(attrs_):
                networks.append(self._session.site.external(self._session.content))
            else:
                subnet = by_id.get(str(attrs_.get("subnet")))
                pg = by_id.get(str(subnet.observed.attrs.get("network"))) if subnet else None
                if pg is None:
                    raise permanent(f"{resource.id}: no port group for {port_id}")
                key = str(pg.facts.get("key") or pg.observed.uid)
                networks.append(Network(pg.ref, pg.observed.uid, switch_uuid, key))
            configs.append(self._addresses.nic_config(snap, port.observed))
        return networks, configs

    def _observe(self, owner: str, ref: Any) -> Observed | None:
        props = read(self._session.content, ref, VM_PROPS)
        observed = decode_vm(self._session, owner, ref, props).observed
        return observed if observed.id is not None else None

    def create(self, owner: str, resource: Resource, snap: Snapshot) -> Observed:
        """Build ``resource`` on ``snap`` (read with port groups, no VMs needed)."""
        cpus, memory = self._sizes(resource)
        networks, nics = self._plan_nics(snap, resource)
        content = self._session.content
        template = self._session.site.template(content, str(resource.attrs.get("image")))
        with self._folders.using(owner) as owner_folder:
            folder = self._folders.vms(owner_folder)
            name = names.vm_name(owner, resource.name)
            ref = named_child(content, folder, name, VM)
            if ref is not None:
                done = self._observe(owner, ref)
                if done is not None and done.id == resource.id:
                    return done
                self._power(ref, resource.id, on=False)  # an unfinished build: finish it
            else:
                ref = self._clone(template, folder, name, resource.id)
            record = self._record(resource) | {"nics": nics}
            self._reconfigure(ref, resource.id, (cpus, memory), record, networks)
            self._session.tag(ref, owner, resource.id, None)
            self._power_on(ref, resource.id)
            self._reconfigure(ref, resource.id, None, {"owner": owner, "id": resource.id})
        return self._result(ref._moId, resource)

    def _record(self, resource: Resource) -> dict[str, Any]:
        a = resource.attrs
        return {
            "image": str(a.get("image")),
            "flavor": str(a.get("flavor")),
            "ports": list(refs(a, "ports")),
            "deps": list(resource.deps),
        }

    def _result(self, uid: str, resource: Resource) -> Observed:
        return Observed(
            uid, resource.id, "vm", {**resource.attrs, "status": "ACTIVE"}, resource.deps
        )

    def _clone(self, template: Any, folder: Any, name: str, rid: str) -> Any:
        site = self._session.resolved()
        spec = vim.vm.CloneSpec(
            location=vim.vm.RelocateSpec(pool=site.pool, datastore=site.datastore),
            powerOn=False,
            template=False,
        )
        return made_or_found(
            lambda: self._session.wait(
                template.CloneVM_Task(folder=folder, name=name, spec=spec), f"{rid}: clone"
            ),
            lambda: named_child(self._session.content, folder, name, VM),
        )

    def _reconfigure(
        self,
        ref: Any,
        rid: str,
        size: tuple[int, int] | None,
        record: dict[str, Any],
        networks: list[Network] | None = None,
    ) -> None:
        spec = vim.vm.ConfigSpec(extraConfig=devices.guest_options(record))
        if size is not None:
            spec.numCPUs, spec.memoryMB = size
        if networks is not None:
            existing = read(self._session.content, ref, ["config.hardware.device"])
            spec.deviceChange = devices.nic_changes(
                existing.get("config.hardware.device") or (), networks
            )
        self._session.wait(ref.ReconfigVM_Task(spec), f"{rid}: reconfigure")

    def _power(self, ref: Any, rid: str, *, on: bool) -> None:
        state = read(self._session.content, ref, ["runtime.powerState"]).get("runtime.powerState")
        try:
            if on and state != "poweredOn":
                self._session.wait(ref.PowerOnVM_Task(), f"{rid}: power on")
            elif not on and state == "poweredOn":
                self._session.wait(ref.PowerOffVM_Task(), f"{rid}: power off")
        except vim.fault.InvalidPowerState:
            pass  # it got there by itself meanwhile

    def _power_on(self, ref: Any, rid: str) -> None:
        """Power on a VM known to be off (saves reading its state first)."""
        with contextlib.suppress(vim.fault.InvalidPowerState):
            self._session.wait(ref.PowerOnVM_Task(), f"{rid}: power on")

    def update(self, owner: str, resource: Resource, current: Observed) -> Observed:
        ref = VM(current.uid, self._session.stub)
        try:
            props = read(self._session.content, ref, VM_PROPS)
        except Exception as err:
            if is_gone(err):
                raise permanent(f"{resource.id}: not found (uid {current.uid})") from err
            raise
        seen = decode_vm(self._session, owner, ref, props).observed
        if seen.id != resource.id:
            raise permanent(f"{resource.id}: not found (uid {current.uid} is not tagged so)")
        refusal = immutable_refusal(resource, seen.attrs)
        if refusal is not None:
            raise permanent(refusal)
        size = self._sizes(resource)
        have = (props.get("config.hardware.numCPU"), props.get("config.hardware.memoryMB"))
        record = {"flavor": str(resource.attrs.get("flavor")), "deps": list(resource.deps)}
        if have != size:
            self._resize(ref, resource.id, have, size, record)
        elif seen.deps != resource.deps or seen.attrs.get("flavor") != resource.attrs.get("flavor"):
            self._reconfigure(ref, resource.id, None, record)
        self._power(ref, resource.id, on=True)
        return self._result(current.uid, resource)

    def _resize(
        self, ref: Any, rid: str, have: tuple[Any, Any], size: tuple[int, int], record: Any
    ) -> None:
        """Grow in place where the VM allows hot-add; otherwise power-cycle around it."""
        hot = read(self._session.content, ref, HOT_ADD)
        growing = size[0] >= int(have[0] or 0) and size[1] >= int(have[1] or 0)
        if not (growing and all(hot.get(p) for p in HOT_ADD)):
            self._power(ref, rid, on=False)
        self._reconfigure(ref, rid, size, record)

    def delete(self, current: Observed) -> None:
        ref = VM(current.uid, self._session.stub)
        try:
            self._power(ref, str(current.id), on=False)
            self._session.wait(ref.Destroy_Task(), f"{current.id}: delete")
        except Exception as err:
            if not is_gone(err):
                raise
