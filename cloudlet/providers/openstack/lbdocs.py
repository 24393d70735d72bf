"""Each LB member VM's document in its own server's metadata.

The LB and listener records live on the LB's first VM with targets as VM
ids; what an LB VM's agent reads must be whole: the listeners with their
back-ends' addresses (``cloudlet.lb.members``). So after every change to an
LB's records, :meth:`Documents.refresh` reads the cloudlet again and writes
each member server's document (chunked, ``cloudlet.lb.placement``) where
the guest reads it from the metadata service, without credentials. A target
or member that is replaced takes its dependent listener or LB with it (the
planner rebuilds what was built on a replaced object), so the documents
follow addresses too. A member or target re-made alone (deleted behind our
back: the planner makes just the VM, and its port when that went too) has
its LBs' documents re-written once its server is built
(``Records.vm_changed``).

Listeners of one LB are written by parallel steps, each reading the cloud
after its own record is written: one lock per provider serialises the
read-and-write, so the last writer has seen every record and no document is
left without a listener another step wrote meanwhile. (Two processes never
sync one cloudlet at once: the engine's lock.)

Nova's metadata service serves a server's current metadata (cached for up to
``metadata_cache_expiration``, 15 s by default); a config drive is written
once, at boot, so it never carries a document written after (the LB's
records always are): an agent reads the metadata service.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from cloudlet.lb import members, placement
from cloudlet.providers.openstack.faults import is_gone, permanent
from cloudlet.providers.openstack.snapshot import Snapshot


class Documents:
    def __init__(self, conn: Any, snapshot: Callable[[str], Snapshot]) -> None:
        self._compute = conn.compute
        self._snapshot = snapshot
        self._lock = threading.Lock()

    def refresh(self, owner: str, lb_id: str, former: Iterable[str] = ()) -> None:
        """Write every member's document as the cloud now holds ``lb_id``, and
        remove it from ``former`` members that no longer are (all of them
        once the LB's record is gone)."""
        with self._lock:
            snap = self._snapshot(owner)
            try:
                docs = members.documents(lb_id, snap.observed())
            except ValueError as err:
                raise permanent(f"{lb_id}: its listeners make no configuration: {err}") from err
            for member, text in sorted(docs.items()):
                server = snap.server(member)
                if server is not None:
                    self._write(server, text)
            for vm in sorted(set(former) - set(docs)):
                server = snap.server(vm)
                if server is not None:
                    self.remove(server)

    def _write(self, server: Any, text: str) -> None:
        # By id, not the server object: the SDK's set keeps only the keys it
        # sent in the object's metadata, and its delete then fails on any other.
        items = placement.chunk_items(text)
        metadata = server.metadata or {}
        if any(metadata.get(k) != v for k, v in items.items()):
            self._compute.set_server_metadata(server.id, **items)
        stale = placement.stale_keys(metadata, items)
        if stale:
            self._compute.delete_server_metadata(server.id, stale)

    def remove(self, server: Any) -> None:
        keys = placement.document_keys(server.metadata or {})
        if not keys:
            return
        # The SDK deletes a list of keys in no order: the count goes alone, first.
        count = [k for k in keys if k == placement.COUNT_KEY]
        chunks = [k for k in keys if k != placement.COUNT_KEY]
        try:
            for batch in (count, chunks):
                if batch:
                    self._compute.delete_server_metadata(server.id, batch)
        except Exception as err:
            if not is_gone(err):
                raise
