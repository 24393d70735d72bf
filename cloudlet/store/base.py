"""The Store seam: a revisioned key-value space with compare-and-swap.

It is deliberately etcd-shaped (one global revision, per-key mod revisions,
prefix listing, CAS on a key's revision) so that the embedded SQLite store
and the etcd store are interchangeable behind it. Typed records
(desired specs, observed state, journal, port allocations) are layered on top
in ``cloudlet.store.records``, not here.

Writes can be fenced: made conditional on other keys not having been taken
over (``Fence``), so that a holder who lost what it held, an ownership
record or a lock, writes nothing more. Locks say what fences them
(``HeldLock``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

import attrs

from cloudlet.errors import ConflictError, FencedOut


@attrs.frozen
class Entry:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int


@attrs.frozen
class Fence:
    """A write condition on another key: its create revision must still be
    ``revision``, i.e. it was not deleted and created anew since. An
    ownership record is such a key: its holder renews it in place (same
    create revision) and a taker deletes and re-creates it, so while the
    holder's writes are fenced on it, a holder that lost it writes nothing.

    ``lock``: ``key`` is not a store key but the name of a lock (as given to
    ``Store.lock``), whose record the store keeps where no store key reaches
    it; only ``HeldLock.fence`` makes such fences, and only the store that
    made it can check it."""

    key: str
    revision: int
    lock: bool = attrs.field(default=False, kw_only=True)


#: What a write may be fenced on: one fence, or several that must all hold.
Fences = Fence | tuple[Fence, ...]


def fence_list(fence: Fences | None) -> tuple[Fence, ...]:
    """The fences of a write's ``fence`` argument, as a tuple (empty: unfenced)."""
    if fence is None:
        return ()
    return (fence,) if isinstance(fence, Fence) else tuple(fence)


def fenced_out(fence: Fence, actual: int) -> FencedOut:
    """The error for a write refused because ``fence`` moved (its key's create
    revision is now ``actual``; 0: absent), naming that fence."""
    if fence.lock:
        return FencedOut(
            f"fenced out: lock {fence.key!r} is lost (its record is at revision {actual}, "
            f"not {fence.revision}); another process may hold it now"
        )
    return FencedOut(
        f"fenced out: {fence.key!r} is at revision {actual}, not {fence.revision}; "
        "another replica owns this cloudlet now"
    )


def conflict(key: str, expected: int, actual: int) -> ConflictError:
    """The error for a write that expected ``key`` at revision ``expected``
    and found it at ``actual`` (0: absent), worded alike by every store."""
    found = "absent" if actual == 0 else f"at revision {actual}"
    wanted = "absent" if expected == 0 else f"at revision {expected}"
    return ConflictError(
        f"conflict on key {key!r}: expected it {wanted} but it is {found} "
        f"(expected revision {expected}, actual revision {actual})"
    )


@attrs.frozen
class HeldLock:
    """A lock while held (what ``Store.lock`` yields).

    ``fence`` holds exactly while the lock is still ours: writes fenced on it
    fail once another holder could have taken the lock. None where the lock
    cannot be lost while the process lives (the SQLite store's flock).
    ``lost`` is set as soon as the store knows the lock is gone (etcd: its
    lease expired, or could not be renewed for a whole TTL); a holder stops
    starting work when it is set, and relies on the fence for the write that
    races that check."""

    name: str
    fence: Fence | None
    lost: threading.Event = attrs.field(factory=threading.Event, eq=False)


class Store(Protocol):
    def get(self, key: str) -> Entry | None: ...

    def put(
        self,
        key: str,
        value: bytes,
        *,
        expect_revision: int | None = None,
        fence: Fences | None = None,
    ) -> int:
        """Write ``key``; with ``expect_revision`` only if its mod revision
        still equals it (0 means: only if absent); with ``fence`` (one or a
        tuple) only if every fence still holds, all checked atomically with
        the write. Returns the new revision; raises ``ConflictError``
        (``FencedOut``, naming the fence that moved, when one did)."""
        ...

    def delete(
        self, key: str, *, expect_revision: int | None = None, fence: Fences | None = None
    ) -> bool:
        """Remove ``key`` (under the same conditions); returns whether it existed."""
        ...

    def list(self, prefix: str) -> list[Entry]:
        """Entries whose key starts with ``prefix``, in key order."""
        ...

    def revision(self) -> int:
        """The store's current global revision."""
        ...

    def lock(self, name: str, timeout: float) -> AbstractContextManager[HeldLock]:
        """Hold ``name`` exclusively across processes; raises ``LockTimeout``
        after ``timeout`` seconds. Released if the holder dies.

        Yields the ``HeldLock``: where a lock can be lost while its holder
        lives (etcd: a lease that expired while the process was frozen or cut
        off), its ``lost`` event says so and its ``fence`` keeps the holder's
        writes from landing after another process took the lock."""
        ...

    def close(self) -> None: ...


@attrs.frozen
class Change:
    """One write seen by a watch: the key, its new value (None: deleted), its revision."""

    key: str
    value: bytes | None
    mod_revision: int


@runtime_checkable
class Watchable(Protocol):
    """A store that pushes its changes (etcd); others are polled for their revision."""

    def watch(self, prefix: str, start_revision: int, stop: threading.Event) -> Iterator[Change]:
        """Every change under ``prefix`` from ``start_revision`` on, in order, until
        ``stop``; resumes after connection failures without a gap, and raises
        ``WatchCompacted`` if the history to resume from is gone."""
        ...
