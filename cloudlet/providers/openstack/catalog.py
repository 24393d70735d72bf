"""Images and flavors by name: the spec names them, servers carry their ids.

Both lists change rarely, so they are read once and re-read only when a
name or an id is not in them; a name the cloud does not have is a permanent
error that says which names it does have.
"""

from __future__ import annotations

import threading
from typing import Any

from cloudlet.errors import ProviderError
from cloudlet.providers.openstack.faults import permanent


class Catalog:
    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._images: dict[str, str] | None = None  # id -> name
        self._flavors: dict[str, str] | None = None
        self._disks: dict[str, int] = {}  # flavor id -> root disk, GB

    def _load(self, fresh: bool) -> tuple[dict[str, str], dict[str, str]]:
        with self._lock:
            if fresh or self._images is None or self._flavors is None:
                self._images = {i.id: i.name for i in self._conn.image.images()}
                flavors = list(self._conn.compute.flavors())
                self._flavors = {f.id: f.name for f in flavors}
                self._disks = {f.id: int(f.disk or 0) for f in flavors}
            return self._images, self._flavors

    def _find(self, which: int, name: str, what: str) -> str:
        for fresh in (False, True):
            table = self._load(fresh)[which]
            found = sorted(uid for uid, n in table.items() if n == name)
            if found:
                return found[0]
        known = ", ".join(sorted(set(self._load(False)[which].values()))[:12])
        raise permanent(f"unknown {what} {name!r} (the cloud has: {known or 'none'})")

    def image_id(self, name: str) -> str:
        return self._find(0, name, "image")

    def flavor_id(self, name: str) -> str:
        return self._find(1, name, "flavor")

    def disk_shrink(self, old: str, new: str) -> str | None:
        """Why a server cannot be resized from flavor ``old`` to ``new``, or None.

        Nova keeps a server's root disk at least as large as the flavor it
        was built with (its ``min_disk``), so a resize may not shrink it.
        A flavor the cloud does not have is left for the update to report.
        """
        try:
            before = self._disks.get(self.flavor_id(old))
            after = self._disks.get(self.flavor_id(new))
        except ProviderError:
            return None
        if before is None or after is None or after >= before:
            return None
        return f"a resize cannot shrink the root disk from {before} to {after} GB"

    def image_name(self, uid: str | None) -> str:
        if not uid:
            return ""
        for fresh in (False, True):
            name = self._load(fresh)[0].get(uid)
            if name is not None:
                return name
        return uid
