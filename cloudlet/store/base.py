"""The Store seam: a revisioned key-value space with compare-and-swap.

It is deliberately etcd-shaped (one global revision, per-key mod revisions,
prefix listing, CAS on a key's revision) so that the embedded SQLite store
and the etcd store are interchangeable behind it. Typed records
(desired specs, observed state, journal, port allocations) are layered on top
in ``cloudlet.store.records``, not here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

import attrs


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
    holder's writes are fenced on it, a holder that lost it writes nothing."""

    key: str
    revision: int


class Store(Protocol):
    def get(self, key: str) -> Entry | None: ...

    def put(
        self,
        key: str,
        value: bytes,
        *,
        expect_revision: int | None = None,
        fence: Fence | None = None,
    ) -> int:
        """Write ``key``; with ``expect_revision`` only if its mod revision
        still equals it (0 means: only if absent); with ``fence`` only if the
        fence key's create revision still equals the fence's. Returns the new
        revision; raises ``ConflictError`` (``FencedOut`` for the fence)."""
        ...

    def delete(
        self, key: str, *, expect_revision: int | None = None, fence: Fence | None = None
    ) -> bool:
        """Remove ``key`` (under the same conditions); returns whether it existed."""
        ...

    def list(self, prefix: str) -> list[Entry]:
        """Entries whose key starts with ``prefix``, in key order."""
        ...

    def revision(self) -> int:
        """The store's current global revision."""
        ...

    def lock(self, name: str, timeout: float) -> AbstractContextManager[None]:
        """Hold ``name`` exclusively across processes; raises ``LockTimeout``
        after ``timeout`` seconds. Released if the holder dies."""
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


def iter_keys(store: Store, prefix: str) -> Iterator[str]:
    for entry in store.list(prefix):
        yield entry.key
