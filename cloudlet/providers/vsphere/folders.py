"""The per-owner VM folder ``cloudlet-<owner>``: made on demand, removed when empty.

It holds the owner's records (one folder each) and a ``vms`` subfolder with
its VMs. VMs are kept apart because govmomi's simulator panics when a
folder's children are searched by name (FindChild, or CreateFolder's
duplicate check) while a clone into that folder is in flight; records are
created by CreateFolder, so they never share a folder with clones.

Creates hold the owner's folder shared while they put something in it; the
delete that empties it takes it exclusively, without waiting, and removes
it only if it is still empty: a folder's Destroy_Task destroys its contents
too, so emptiness is checked right before, under the lock. Other processes
never race here, because the engine locks a cloudlet per sync.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from cloudlet.providers.vsphere import fields, names
from cloudlet.providers.vsphere.inventory import children, find_child, made_or_found, retrieve
from cloudlet.providers.vsphere.sdk import vim
from cloudlet.providers.vsphere.session import Session


class _Gate:
    """A readers-writer gate whose writer never waits (it skips instead)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.users = 0
        self.closing = False
        #: uids of the owner's objects deleted since its folder was last removed
        self.gone: set[str] = set()


class OwnerFolders:
    def __init__(self, session: Session) -> None:
        self._session = session
        self._gates: dict[str, _Gate] = {}
        self._lock = threading.Lock()

    def _gate(self, owner: str) -> _Gate:
        with self._lock:
            return self._gates.setdefault(owner, _Gate())

    @contextlib.contextmanager
    def using(self, owner: str) -> Iterator[Any]:
        """The owner's folder (created if missing), kept while the block runs."""
        gate = self._gate(owner)
        with gate.cond:
            gate.cond.wait_for(lambda: not gate.closing)
            gate.users += 1
        try:
            yield self._ensure(owner)
        finally:
            with gate.cond:
                gate.users -= 1
                gate.cond.notify_all()

    def _ensure(self, owner: str) -> Any:
        content = self._session.content
        parent = self._session.resolved().vm_folder
        name = names.owner_folder(owner)
        found = find_child(content, parent, name)
        if found is not None:
            return found
        folder = made_or_found(
            lambda: parent.CreateFolder(name), lambda: find_child(content, parent, name)
        )
        self._session.fields.set(content, folder, fields.OWNER, owner)
        return folder

    def vms(self, folder: Any) -> Any:
        """The ``vms`` subfolder of an owner's folder (which holds only folders)."""
        content = self._session.content
        name = names.VMS_FOLDER
        found = find_child(content, folder, name)
        if found is not None:
            return found
        return made_or_found(
            lambda: folder.CreateFolder(name), lambda: find_child(content, folder, name)
        )

    def _is_empty(self, folder: Any) -> bool:
        """No record, and no VM in ``vms``, under the owner's folder."""
        listed = retrieve(
            self._session.content,
            [children(folder, grandchildren=True)],
            {vim.ManagedEntity: ["name"]},
        )
        return all(
            isinstance(ref, vim.Folder) and props.get("name") == names.VMS_FOLDER
            for ref, props in listed
        )

    def all_gone(self, owner: str, deleted: str, seen: Iterable[str]) -> bool:
        """Note that ``deleted`` is gone; True if everything in ``seen`` (what
        the delete's snapshot held) is gone too, by this delete or another.

        Two concurrent deletes of an owner's last two objects each see the
        other in their snapshot; the later of the two to get here sees both
        gone, so the folder is not left behind.
        """
        gate = self._gate(owner)
        with gate.cond:
            gate.gone.add(deleted)
            return set(seen) <= gate.gone

    def remove_if_empty(self, owner: str, folder: Any) -> None:
        """Best effort: an owner that still has objects, or is being used, keeps it."""
        gate = self._gate(owner)
        with gate.cond:
            if gate.users or gate.closing:
                return
            gate.closing = True
        try:
            # Best effort: a folder left behind is empty and harmless, and the
            # next delete of this owner tries again.
            with contextlib.suppress(Exception):
                if self._is_empty(folder):
                    self._session.wait(folder.Destroy_Task(), f"{owner}: remove folder")
                    with gate.cond:
                        gate.gone.clear()
        finally:
            with gate.cond:
                gate.closing = False
                gate.cond.notify_all()
