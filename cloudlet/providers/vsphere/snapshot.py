"""One owner's objects, read in two round trips, decoded into ``Observed``.

``FindChild`` locates the owner's folder ``cloudlet-<owner>``; a single
``RetrievePropertiesEx`` then reads its children (record folders, and the VMs
in its ``vms`` subfolder)
and the port groups on the site's switch with every property the decoding
needs. The snapshot also keeps each object's reference and the raw facts
(port group keys, NIC networks) that creates and deletes resolve against.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import attrs

from cloudlet.model.kinds import KINDS
from cloudlet.model.resources import Observed
from cloudlet.providers.vsphere import fields, names
from cloudlet.providers.vsphere.devices import GUEST
from cloudlet.providers.vsphere.inventory import children, find_child, last_values, retrieve
from cloudlet.providers.vsphere.sdk import vim
from cloudlet.providers.vsphere.session import Session, decode_record

VM_PROPS = (
    "name",
    "customValue",
    "config.extraConfig",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
    "runtime.powerState",
    "network",
)
STATUS = {"poweredOn": "ACTIVE", "poweredOff": "SHUTOFF", "suspended": "SUSPENDED"}


@attrs.frozen
class Item:
    observed: Observed
    ref: Any
    facts: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class Snapshot:
    owner: str
    folder: Any | None
    items: tuple[Item, ...]

    def observed(self) -> list[Observed]:
        return [i.observed for i in self.items]

    def by_id(self) -> dict[str, Item]:
        """The oldest object per engine id (the planner deletes younger duplicates)."""
        out: dict[str, Item] = {}
        for item in self.items:
            if item.observed.id is not None:
                out.setdefault(item.observed.id, item)
        return out


def flavor_of(
    cpus: int, memory: int, recorded: str | None, table: Mapping[str, tuple[int, int]]
) -> str:
    """The flavor the hardware has: the recorded one if it still fits, else any that does."""
    if recorded is not None and table.get(recorded) == (cpus, memory):
        return recorded
    matching = sorted(name for name, size in table.items() if size == (cpus, memory))
    return matching[0] if matching else f"custom-{cpus}cpu-{memory}mb"


def _order(moid: str) -> tuple[int, str]:
    digits = re.findall(r"\d+", moid)
    return (int(digits[-1]) if digits else 0, moid)


def _json_list(text: str | None) -> list[str]:
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def _untagged(ref: Any, name: str, kind: str) -> Item:
    guess = name.split(":", 1)[0]
    return Item(Observed(ref._moId, None, guess if guess in KINDS else kind, {}), ref)


def decode_vm(session: Session, owner: str, ref: Any, props: dict[str, Any]) -> Item:
    extra = {
        str(k)[len(GUEST) :]: v
        for k, v in last_values(props.get("config.extraConfig")).items()
        if str(k).startswith(GUEST)
    }
    facts: dict[str, Any] = {
        "networks": [n._moId for n in props.get("network") or ()],
        "power": props.get("runtime.powerState"),
        "lb": extra.get("lb"),  # the LB document of a member VM (``lbdocs.py``)
    }
    if extra.get("owner") != owner or not extra.get("id"):
        return Item(_untagged(ref, "", "vm").observed, ref, facts)
    cpus = int(props.get("config.hardware.numCPU") or 0)
    memory = int(props.get("config.hardware.memoryMB") or 0)
    attrs_ = {
        "image": extra.get("image"),
        "flavor": flavor_of(cpus, memory, extra.get("flavor"), session.config.site.flavors),
        "ports": tuple(_json_list(extra.get("ports"))),
        "status": STATUS.get(str(props.get("runtime.powerState")), "UNKNOWN"),
    }
    deps = _json_list(extra.get("deps"))
    return Item(Observed(ref._moId, str(extra["id"]), "vm", attrs_, deps), ref, facts)


def _tagged(
    session: Session, owner: str, ref: Any, props: dict[str, Any], kind: str
) -> Item | None:
    tags = session.fields.decode(props.get("customValue"))
    record = decode_record(tags.get(fields.RECORD))
    if tags.get(fields.OWNER) != owner or not tags.get(fields.ID) or record is None:
        return None
    rid = tags[fields.ID]
    attrs_, deps = record
    facts = {"key": props.get("key")}
    return Item(Observed(ref._moId, rid, kind or rid.split("/", 1)[0], attrs_, deps), ref, facts)


def take(session: Session, owner: str, *, vms: bool = True, portgroups: bool = True) -> Snapshot:
    """Everything tagged with ``owner`` (plus untagged leftovers in its folder).

    Records are always read; a caller that needs no VMs or port groups says
    so, which keeps the answer (and pyVmomi's slow XML parsing) small.
    """
    content = session.content
    site = session.resolved()
    folder = find_child(content, site.vm_folder, names.owner_folder(owner))
    sets = [children(folder, grandchildren=vms)] if folder is not None else []
    wanted: dict[Any, list[str]] = {vim.Folder: ["name", "customValue"]}
    if vms:
        wanted[vim.VirtualMachine] = list(VM_PROPS)
    if portgroups:
        sets.append(children(site.switch, "portgroup", vim.DistributedVirtualSwitch))
        wanted[vim.dvs.DistributedVirtualPortgroup] = ["name", "customValue", "key"]
    items: list[Item] = []
    for ref, props in retrieve(content, sets, wanted, missing_ok=True):
        name = str(props.get("name", ""))
        if isinstance(ref, vim.VirtualMachine):
            items.append(decode_vm(session, owner, ref, props))
        elif isinstance(ref, vim.dvs.DistributedVirtualPortgroup):
            # By tag, not by name: a port group renamed by hand is still ours.
            item = _tagged(session, owner, ref, props, "network")
            items += [item] if item else []
        elif isinstance(ref, vim.Folder) and name != names.VMS_FOLDER:
            items.append(_tagged(session, owner, ref, props, "") or _untagged(ref, name, "record"))
    items.sort(key=lambda i: _order(i.observed.uid))
    return Snapshot(owner, folder, tuple(items))
