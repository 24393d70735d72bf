"""The custom attributes (CustomFieldsManager) that tag what the engine made.

``cloudlet.owner`` and ``cloudlet.id`` are the owner/id tags every created
object carries, visible to operators in the vSphere client; ``cloudlet.record``
holds a record's attributes and dependencies as JSON. The definitions are
made once per managed-object type (VM, folder, DV port group), because a
definition for all types cannot be read back by pyVmomi from govmomi's
simulator (it leaves the definition's required ``type`` empty).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from cloudlet.providers.vsphere.inventory import itself, last_values, retrieve
from cloudlet.providers.vsphere.sdk import vim

OWNER = "cloudlet.owner"
ID = "cloudlet.id"
RECORD = "cloudlet.record"
NAMES = (OWNER, ID, RECORD)
TYPES: tuple[Any, ...] = (vim.VirtualMachine, vim.Folder, vim.dvs.DistributedVirtualPortgroup)


def _type_name(kind: Any) -> str:
    return str(getattr(kind, "_wsdlName", kind))


class Fields:
    """Field keys by (name, type), defined on first use and then cached."""

    def __init__(self) -> None:
        self._keys: dict[tuple[str, str], int] = {}
        self._names: dict[int, str] = {}
        self._lock = threading.Lock()

    def ensure(self, content: Any) -> None:
        with self._lock:
            if len(self._keys) == len(NAMES) * len(TYPES):
                return
            self._load(content)
            manager = content.customFieldsManager
            for kind in TYPES:
                for name in NAMES:
                    if (name, _type_name(kind)) not in self._keys:
                        # DuplicateName: another client defined it meanwhile.
                        with contextlib.suppress(vim.fault.DuplicateName):
                            manager.AddCustomFieldDef(name=name, moType=kind)
            self._load(content)

    def _load(self, content: Any) -> None:
        manager = content.customFieldsManager
        found = retrieve(content, [itself(manager)], {type(manager): ["field"]})
        for field in (found[0][1].get("field") if found else None) or ():
            if field.name in NAMES:
                kind = _type_name(field.managedObjectType or "")
                self._keys[(field.name, kind)] = field.key
                self._names[field.key] = field.name

    def decode(self, custom_values: Any) -> dict[str, str]:
        """Our fields' values on one object (name -> value; the last set wins)."""
        values = last_values(custom_values)
        return {self._names[k]: str(v) for k, v in values.items() if k in self._names and v}

    def set(self, content: Any, obj: Any, name: str, value: str) -> None:
        key = self._keys[(name, _type_name(type(obj)))]
        content.customFieldsManager.SetField(entity=obj, key=key, value=value)
