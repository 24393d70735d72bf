"""Which replica reconciles which cloudlet: leases with fencing, on any Store.

Each replica heartbeats a record under ``/cloudlet/replicas/``. Every
cloudlet has a preferred replica among the live ones, by rendezvous hashing
(highest hash of cloudlet and replica name): so work spreads evenly with no
coordinator, a joining replica takes over only its share, and a dead
replica's cloudlets fall to the survivors. Ownership itself is a record
under ``/cloudlet/owners/`` holding its owner and an expiry time: the owner
renews it in place, a taker may delete and re-create it only once it has
expired. Because renewals keep its create revision and a takeover changes
it, the holder fences every write it makes for the cloudlet on that create
revision (``Fence``): a replica that paused past its lease and lost the
cloudlet can write nothing, and so start no action, for it any more.

A replica has two names. ``replica`` is its stable id (the host name by
default): it is what rendezvous hashing and the metrics use, so a restart
keeps its share and its series. ``holder`` is unique to the process (the id
and a random suffix) and is what a lease records as its owner: two
processes under one id, or a restarted one, never take each other's leases
for their own and so never share a fence.

Expiry times are wall-clock, so replicas need clocks in step to within a
fraction of the TTL (NTP is plenty); the TTL defaults to 10 s.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterable

import attrs

from cloudlet.errors import ConflictError
from cloudlet.store.base import Entry, Fence, Store

OWNERS = "/cloudlet/owners/"
REPLICAS = "/cloudlet/replicas/"


def _encode(replica: str, expires: float, holder: str | None = None) -> bytes:
    data: dict[str, str | float] = {"replica": replica, "expires": expires}
    if holder is not None:
        data["holder"] = holder
    return json.dumps(data).encode()


def _decode(entry: Entry) -> tuple[str, float]:
    """(the holder, or the replica id of a record written without one; expiry)."""
    data = json.loads(entry.value)
    return str(data.get("holder", data["replica"])), float(data["expires"])


def _unique_holder(ownership: Ownership) -> str:
    return f"{ownership.replica}#{secrets.token_hex(4)}"


def preferred(name: str, replicas: Iterable[str]) -> str | None:
    """Rendezvous hashing: stable, even, and minimal movement on change."""
    return max(
        replicas,
        key=lambda r: hashlib.sha256(f"{name}\0{r}".encode()).digest(),
        default=None,
    )


@attrs.define
class Held:
    create_revision: int
    mod_revision: int


@attrs.define
class Ownership:
    store: Store
    replica: str
    ttl: float = 10.0
    clock: Callable[[], float] = time.time
    #: The owner a lease records: this process, never another under the same id.
    holder: str = attrs.field(default=attrs.Factory(_unique_holder, takes_self=True))
    held: dict[str, Held] = attrs.field(factory=dict)
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    def heartbeat(self) -> None:
        self.store.put(REPLICAS + self.replica, _encode(self.replica, self.clock() + self.ttl))

    def live_replicas(self) -> list[str]:
        now = self.clock()
        live = (json.loads(e.value) for e in self.store.list(REPLICAS))
        return sorted(str(d["replica"]) for d in live if float(d["expires"]) > now)

    def leave(self) -> None:
        """Graceful stop: hand everything back at once instead of after a TTL."""
        for name in list(self.held):
            self.release(name)
        self.store.delete(REPLICAS + self.replica)

    def fence(self, name: str) -> Fence:
        with self._lock:
            held = self.held.get(name)
        # -1 never matches: without ownership, no fenced write succeeds.
        return Fence(OWNERS + name, held.create_revision if held else -1)

    def owns(self, name: str) -> bool:
        with self._lock:
            return name in self.held

    def acquire(self, name: str) -> bool:
        """Take ``name`` if it is free, expired or already ours."""
        key = OWNERS + name
        entry = self.store.get(key)
        if entry is not None:
            owner, expires = _decode(entry)
            if owner != self.holder and expires > self.clock():
                return False
            if owner != self.holder:
                try:  # expired: delete so the re-creation changes the fence
                    self.store.delete(key, expect_revision=entry.mod_revision)
                except ConflictError:
                    return False
                entry = None
        value = _encode(self.replica, self.clock() + self.ttl, self.holder)
        try:
            rev = self.store.put(key, value, expect_revision=entry.mod_revision if entry else 0)
        except ConflictError:
            return False
        created = entry.create_revision if entry else rev
        with self._lock:
            self.held[name] = Held(created, rev)
        return True

    def renew(self) -> list[str]:
        """Extend every lease held; returns the names lost meanwhile."""
        lost = []
        with self._lock:
            names = dict(self.held)
        for name, held in names.items():
            value = _encode(self.replica, self.clock() + self.ttl, self.holder)
            try:
                rev = self.store.put(OWNERS + name, value, expect_revision=held.mod_revision)
            except ConflictError:
                lost.append(name)
                with self._lock:
                    self.held.pop(name, None)
                continue
            with self._lock:
                if name in self.held:
                    self.held[name].mod_revision = rev
        return lost

    def release(self, name: str) -> None:
        with self._lock:
            held = self.held.pop(name, None)
        if held is not None:
            # A conflict means it was already taken over: nothing of ours left.
            with contextlib.suppress(ConflictError):
                self.store.delete(OWNERS + name, expect_revision=held.mod_revision)

    def rebalance(
        self, names: Iterable[str], may_release: Callable[[str], bool] = lambda name: True
    ) -> tuple[list[str], list[str]]:
        """Acquire the cloudlets preferring this replica; release the others
        that ``may_release`` allows now (not while this replica acts on one).
        Returns (gained, released)."""
        live = self.live_replicas()
        if self.replica not in live:
            live.append(self.replica)
        gained, released = [], []
        for name in sorted(names):
            mine = preferred(name, live) == self.replica
            if mine and not self.owns(name) and self.acquire(name):
                gained.append(name)
            elif not mine and self.owns(name) and may_release(name):
                self.release(name)
                released.append(name)
        return gained, released
