"""The etcd store: the Store protocol on a shared etcd cluster.

Several daemon replicas and CLI processes share the desired state through etcd,
so this store must behave exactly like the embedded one (the same contract
suite runs against both) while surviving what a network store meets: members
that restart or die, expired auth tokens, lost answers to writes. The last
three are ``cloudlet.store.etcdconn``'s business; this module is the key
layout, compare-and-swap and locks.

Key layout: every etcd key this store writes starts with its prefix
(``/cloudlet`` unless configured)::

    PREFIX/kv<store key>        a Store entry: /cloudlet/kv/cloudlet/desired/berlin-1
    PREFIX/locks/<quoted name>  a held lock, attached to its holder's lease

Store keys start with ``/``; prefix segments are plain names and may not be
``kv`` or ``locks``. So the key spaces of two different prefixes never
overlap, even when one prefix nests in another (``/a`` and ``/a/b``: the
second one's keys start with ``/a/b/``, which is neither ``/a/kv/`` nor
``/a/locks/``). Several installations can share one etcd this way; they share
its revision counter too, which the Store contract allows (revisions are
compared, never counted).

Compare-and-swap is one etcd transaction comparing the key's mod revision
(or, for "only if absent", its create revision with 0); its failure branch
reads the key, so a ConflictError names the revision actually found.

A fenced write adds one compare per fence to the same transaction (the
fence key's create revision), so all fences are checked atomically with the
write; the failure branch's reads tell which fence moved.

Locks are lease-bound keys created only if absent; a background thread keeps
the lease alive while the lock is wanted or held, so a holder killed with
SIGKILL releases within the lease TTL. Waiters poll briefly instead of
watching: a watch breaks on every etcd restart, and a poll of at most
``LOCK_POLL_MAX_S`` costs one small read.

A living holder can lose its lock too, frozen or cut off past the TTL
(``_KeepAlive`` then sets ``HeldLock.lost``). Its fence is the lock key's
create revision, which a taker's re-created key changes, so writes fenced on
it cannot land after the lock changed hands, even before the holder notices.
That fence names the lock (``Fence.lock``) and ``put`` compares
``PREFIX/locks/<quoted name>`` for it: the lock record stays out of the store
key space, where any listing or watch would see it and an ordinary write
could clobber it, and the layout stays the one every running process uses,
so old and new processes still exclude each other.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from pyetcd.utils import prefix_range_end

from cloudlet.errors import CloudletError, ConflictError, LockTimeout
from cloudlet.store.base import (
    Change,
    Entry,
    Fence,
    Fences,
    HeldLock,
    Store,
    conflict,
    fence_list,
    fenced_out,
)
from cloudlet.store.etcdconn import DEFAULT_TIMEOUT_S, Client, EtcdConnection

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "/cloudlet"
DEFAULT_LOCK_TTL_S = 10
LOCK_POLL_MIN_S, LOCK_POLL_MAX_S = 0.01, 0.2
LIST_PAGE = 1000
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_RESERVED = frozenset({"kv", "locks"})


def normalize_prefix(prefix: str) -> str:
    """``/a/b`` from ``a/b/`` and the like; refuses what could overlap."""
    segments = [s for s in prefix.strip().split("/") if s]
    for segment in segments:
        if not _SEGMENT.fullmatch(segment) or segment in _RESERVED:
            raise CloudletError(
                f"invalid etcd key prefix {prefix!r}: segments are names of letters, digits, "
                f"'.', '_', '-' and not {' or '.join(sorted(_RESERVED))}"
            )
    return "".join(f"/{s}" for s in segments)


class EtcdStore:
    """A Store on etcd, safe to share between threads.

    ``timeout`` bounds each call, retries on other endpoints included;
    ``lock_ttl`` (whole seconds, etcd's minimum is about 2) is how long a dead
    holder's lock lingers.
    """

    def __init__(
        self,
        endpoints: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        user: str | None = None,
        password: str | None = None,
        ca_cert: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        lock_ttl: int = DEFAULT_LOCK_TTL_S,
    ) -> None:
        self.connection = EtcdConnection(
            endpoints,
            user=user,
            password=password,
            ca_cert=ca_cert,
            cert=cert,
            key=key,
            timeout=timeout,
        )
        self.prefix = normalize_prefix(prefix)
        self.lock_ttl = max(int(lock_ttl), 1)
        self._kv = f"{self.prefix}/kv"
        self._locks = f"{self.prefix}/locks/"
        self._call = self.connection.call

    def _key(self, key: str) -> str:
        if not key.startswith("/"):
            raise ValueError(f"store keys start with '/': {key!r}")
        return self._kv + key

    def _lock_key(self, name: str) -> str:
        return self._locks + quote(name, safe="")

    def _fence_key(self, fence: Fence) -> str:
        return self._lock_key(fence.key) if fence.lock else self._key(fence.key)

    # -- the Store protocol ------------------------------------------------

    def get(self, key: str) -> Entry | None:
        full = self._key(key)

        def op(client: Client) -> Entry | None:
            value, meta = client.get(full)
            return None if meta is None else _entry(key, value, meta)

        return self._call(op)

    def put(
        self,
        key: str,
        value: bytes,
        *,
        expect_revision: int | None = None,
        fence: Fences | None = None,
    ) -> int:
        full, data, fences = self._key(key), bytes(value), fence_list(fence)
        if expect_revision is None and not fences:
            return self._call(lambda client: int(client.put(full, data).header.revision))

        def op(client: Client) -> int:
            t = client.transactions
            ok, responses = client.transaction(
                compare=self._conditions(t, full, expect_revision, fences),
                success=[t.put(full, data), t.get(full)],
                failure=[t.get(full), *self._fence_reads(t, fences)],
            )
            if ok:
                return int(responses[-1][0][1].mod_revision)
            raise self._why(key, expect_revision, responses, fences)

        return self._call(op, idempotent=False)

    def delete(
        self, key: str, *, expect_revision: int | None = None, fence: Fences | None = None
    ) -> bool:
        full, fences = self._key(key), fence_list(fence)
        if expect_revision is None and not fences:
            return self._call(lambda client: bool(client.delete(full)))

        def op(client: Client) -> bool:
            t = client.transactions
            ok, responses = client.transaction(
                compare=self._conditions(t, full, expect_revision, fences),
                success=[t.delete(full)],
                failure=[t.get(full), *self._fence_reads(t, fences)],
            )
            if ok:
                return bool(responses[0].response_delete_range.deleted > 0)
            raise self._why(key, expect_revision, responses, fences)

        return self._call(op, idempotent=False)

    def _conditions(
        self, t: Any, full: str, expected: int | None, fences: tuple[Fence, ...]
    ) -> list[Any]:
        out = [] if expected is None else [_unchanged(t, full, expected)]
        out.extend(t.create(self._fence_key(f)) == f.revision for f in fences)
        return out

    def _fence_reads(self, t: Any, fences: tuple[Fence, ...]) -> list[Any]:
        return [t.get(self._fence_key(f)) for f in fences]

    @staticmethod
    def _why(
        key: str, expected: int | None, responses: list[Any], fences: tuple[Fence, ...]
    ) -> ConflictError:
        """Which condition failed, from the failure branch's reads (the key,
        then each fence key, all at the revision the compares saw); a moved
        fence takes precedence (we lost what we held)."""
        found = [r[0][1] if r else None for r in responses]
        for fence, meta in zip(fences, found[1:], strict=True):
            now = int(meta.create_revision) if meta is not None else 0
            if now != fence.revision:
                return fenced_out(fence, now)
        actual = int(found[0].mod_revision) if found[0] is not None else 0
        return conflict(key, expected if expected is not None else -1, actual)

    def list(self, prefix: str) -> list[Entry]:
        start = self._kv + (prefix or "/")
        if not start.startswith(self._kv + "/"):
            return []  # no store key can match
        end = prefix_range_end(start.encode())
        return self._call(lambda client: _range(client, start.encode(), end, len(self._kv)))

    def revision(self) -> int:
        probe = self._kv + "/"
        return self._call(
            lambda client: int(client.get_response(probe, count_only=True).header.revision)
        )

    def watch(self, prefix: str, start_revision: int, stop: threading.Event) -> Iterator[Change]:
        from cloudlet.store.etcdwatch import watch_changes  # the watch machinery, on demand

        return watch_changes(self, prefix, start_revision, stop)

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float) -> Iterator[HeldLock]:
        if not name:
            raise ValueError("lock name must not be empty")
        granted = time.monotonic()  # the lease's TTL runs from no earlier than this
        lease = self._call(lambda client: int(client.lease(self.lock_ttl).id))
        keeper = _KeepAlive(self, lease, name, granted)
        keeper.start()
        try:
            created = self._acquire(name, lease, timeout)
            yield HeldLock(name, Fence(name, created, lock=True), keeper.lost)
        finally:
            keeper.stop()
            try:
                # Revoking the lease deletes the lock key with it.
                self._call(lambda client: client.revoke_lease(lease))
            except CloudletError as err:
                if not keeper.lost.is_set():  # else its loss was reported already
                    log.warning("lock %s: %s; it expires within %d s", name, err, self.lock_ttl)

    def _acquire(self, name: str, lease: int, timeout: float) -> int:
        """Wait for the lock key to be ours; returns its create revision (the fence)."""
        key = self._lock_key(name)
        holder = json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode()
        deadline = time.monotonic() + max(timeout, 0.0)
        pause = LOCK_POLL_MIN_S

        def attempt(client: Client) -> tuple[bytes, int, int] | None:
            """The lock record after trying to create it: value, lease, create revision."""
            # Idempotent: a retry finds the key held by our own lease.
            t = client.transactions
            _, responses = client.transaction(
                compare=[t.create(key) == 0],
                success=[t.put(key, holder, lease=lease), t.get(key)],
                failure=[t.get(key)],
            )
            found = responses[-1][0] if responses[-1] else None
            if found is None:
                return None
            return found[0], int(found[1].lease_id), int(found[1].create_revision)

        while True:
            found = self._call(attempt)
            if found is not None and found[1] == lease:  # taken now, or ours already
                return found[2]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _lock_timeout(name, timeout, found[0] if found else b"")
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, LOCK_POLL_MAX_S)

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> EtcdStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        user = self.connection.user
        who = f", user={user!r}" if user else ""
        return f"EtcdStore({self.connection.where!r}, prefix={self.prefix!r}{who})"


class _KeepAlive:
    """Renews a lock's lease every third of its TTL until stopped, and sets
    ``lost`` once the lock must be taken as gone: etcd answers that the lease
    expired (TTL <= 0), or no renewal has succeeded for a whole TTL since the
    last successful one was sent (or the lease granted), so etcd may have let
    it expire and handed the lock on. A frozen process wakes to the second:
    the monotonic clock ran on while it was stopped."""

    def __init__(self, store: EtcdStore, lease: int, name: str, granted: float) -> None:
        self.store, self.lease, self.name = store, lease, name
        self.lost = threading.Event()
        self._renewed = granted  # monotonic time the last good renewal was sent
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing; returns once the thread ended (a renewal in flight
        is bounded by the connection timeout, its retries included)."""
        self._stop.set()
        self._thread.join(2 * self.store.connection.timeout + 1)

    def _run(self) -> None:
        ttl = self.store.lock_ttl
        while not self._stop.wait(max(0.0, min(ttl / 3, self._renewed + ttl - time.monotonic()))):
            if time.monotonic() - self._renewed >= ttl:
                self._lose(f"its lease was not renewed for {ttl} s and must be presumed expired")
                return
            sent = time.monotonic()
            try:
                answers = self.store._call(lambda client: list(client.refresh_lease(self.lease)))
            except CloudletError as err:
                log.warning("lock %s: cannot renew its lease: %s", self.name, err)
                continue
            except RuntimeError:
                self._lose("the store was closed while it was held")
                return
            if not answers:
                log.warning("lock %s: etcd did not answer a renewal of its lease", self.name)
            elif answers[-1].TTL <= 0:
                self._lose("etcd says its lease expired")
                return
            else:
                self._renewed = sent

    def _lose(self, why: str) -> None:
        if self._stop.is_set():
            return  # released meanwhile: nothing is done under it any more anyway
        self.lost.set()
        log.error(
            "lock %s is lost: %s; another process may take it, and nothing more will be done "
            "under it",
            self.name,
            why,
        )


def open_etcd(endpoints: str) -> Store:
    """The etcd store for ``--etcd``, configured from ``CLOUDLET_ETCD_*``."""
    env = os.environ.get
    try:
        timeout = float(env("CLOUDLET_ETCD_TIMEOUT") or DEFAULT_TIMEOUT_S)
    except ValueError:
        raise CloudletError("CLOUDLET_ETCD_TIMEOUT must be a number of seconds") from None
    try:
        lock_ttl = int(env("CLOUDLET_ETCD_LOCK_TTL") or DEFAULT_LOCK_TTL_S)
    except ValueError:
        raise CloudletError("CLOUDLET_ETCD_LOCK_TTL must be a whole number of seconds") from None
    return EtcdStore(
        endpoints,
        prefix=env("CLOUDLET_ETCD_PREFIX", DEFAULT_PREFIX),
        user=env("CLOUDLET_ETCD_USER") or None,
        password=env("CLOUDLET_ETCD_PASSWORD") or None,
        ca_cert=env("CLOUDLET_ETCD_CACERT") or None,
        cert=env("CLOUDLET_ETCD_CERT") or None,
        key=env("CLOUDLET_ETCD_KEY") or None,
        timeout=timeout,
        lock_ttl=lock_ttl,
    )


# -- helpers ---------------------------------------------------------------


def _entry(key: str, value: bytes, meta: Any) -> Entry:
    return Entry(
        key=key,
        value=bytes(value),
        mod_revision=int(meta.mod_revision),
        create_revision=int(meta.create_revision),
    )


def _range(client: Client, start: bytes, end: bytes, strip: int) -> list[Entry]:
    """Page through a range at one revision, so the listing is a snapshot
    and no single answer outgrows gRPC's message limit."""
    entries: list[Entry] = []
    revision = None
    while True:
        resp = client.get_range_response(start, end, limit=LIST_PAGE, revision=revision)
        revision = revision or resp.header.revision
        entries.extend(_entry(kv.key.decode()[strip:], kv.value, kv) for kv in resp.kvs)
        if not resp.more or not resp.kvs:
            return entries
        start = resp.kvs[-1].key + b"\0"


def _unchanged(t: Any, full: str, expected: int) -> Any:
    """The CAS condition: absent (no create revision) or unmodified since."""
    return t.create(full) == 0 if expected == 0 else t.mod(full) == expected


def _lock_timeout(name: str, timeout: float, raw: bytes) -> LockTimeout:
    try:
        holder = json.loads(raw)
        who = f"pid {holder['pid']} on {holder['host']}"
    except (ValueError, KeyError, TypeError):
        who = "holder unknown"
    return LockTimeout(
        f"lock {name} is held by another process ({who}); gave up after {timeout:g} s",
        holder=who,
        waited=timeout,
    )
