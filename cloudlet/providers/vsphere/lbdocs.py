"""Each LB member VM's document in its own ``guestinfo``.

An LB and its listeners are folder records with targets as VM ids; the
LB VM's agent needs them whole, back-ends resolved to addresses
(``cloudlet.lb.members``), somewhere it reads without credentials: the
VM's ``extraConfig`` variable ``guestinfo.cloudlet.lb``, which the guest
reads with ``vmware-rpctool "info-get guestinfo.cloudlet.lb"``. After every
change to an LB's records, :meth:`Documents.refresh` reads the cloudlet
again and reconfigures each member whose document differs. A replaced
target or member takes its listener or LB with it (the planner rebuilds
what was built on a replaced object), so the documents follow addresses.
A member or target re-made alone (deleted behind our back: the planner
makes just the VM) has its LBs' documents re-written once it is built and
tagged (``Records.vm_changed``).

Removing the document sets the variable to the empty string, which vCenter
takes as "remove the option" (govmomi's simulator keeps it, empty): a
reader takes an empty value as no document. One lock per provider
serialises the read-and-write, so of the parallel steps writing one LB's
listeners the last has seen every record.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from cloudlet.lb import members, placement
from cloudlet.providers.vsphere.faults import is_gone, permanent
from cloudlet.providers.vsphere.sdk import vim
from cloudlet.providers.vsphere.session import Session
from cloudlet.providers.vsphere.snapshot import Item, Snapshot


class Documents:
    def __init__(self, session: Session, snapshot: Callable[..., Snapshot]) -> None:
        self._session = session
        self._snapshot = snapshot
        self._lock = threading.Lock()

    def refresh(self, owner: str, lb_id: str, former: Iterable[str] = ()) -> None:
        """Write every member's document as the records now say, and remove it
        from ``former`` members that no longer are (all, once the LB is gone)."""
        with self._lock:
            snap = self._snapshot(owner, portgroups=False)
            try:
                docs = members.documents(lb_id, snap.observed())
            except ValueError as err:
                raise permanent(f"{lb_id}: its listeners make no configuration: {err}") from err
            by_id = snap.by_id()
            for vm, text in sorted(docs.items()) + [
                (v, "") for v in sorted(set(former) - set(docs))
            ]:
                item = by_id.get(vm)
                if item is not None and item.observed.kind == "vm":
                    self._write(item, text)

    def _write(self, item: Item, text: str) -> None:
        if (item.facts.get("lb") or "") == text:
            return
        option = vim.option.OptionValue(key=placement.GUESTINFO_KEY, value=text)
        spec = vim.vm.ConfigSpec(extraConfig=[option])
        try:
            self._session.wait(item.ref.ReconfigVM_Task(spec), f"{item.observed.id}: LB document")
        except Exception as err:
            if not is_gone(err):  # a VM deleted meanwhile needs no document
                raise
