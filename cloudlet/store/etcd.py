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

Locks are lease-bound keys created only if absent; a background thread keeps
the lease alive while the lock is wanted or held, so a holder killed with
SIGKILL releases within the lease TTL. Waiters poll briefly instead of
watching: a watch breaks on every etcd restart, and a poll of at most
``LOCK_POLL_MAX_S`` costs one small read.
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

from cloudlet.errors import CloudletError, ConflictError, FencedOut, LockTimeout
from cloudlet.store.base import Change, Entry, Fence, Store
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
        fence: Fence | None = None,
    ) -> int:
        full, data = self._key(key), bytes(value)
        if expect_revision is None and fence is None:
            return self._call(lambda client: int(client.put(full, data).header.revision))

        def op(client: Client) -> int:
            t = client.transactions
            ok, responses = client.transaction(
                compare=self._conditions(t, full, expect_revision, fence),
                success=[t.put(full, data), t.get(full)],
                failure=[t.get(full)],
            )
            found = responses[-1][0] if responses[-1] else None
            actual = found[1].mod_revision if found else 0
            if ok:
                return int(actual)
            raise self._why(client, key, expect_revision, actual, fence)

        return self._call(op, idempotent=False)

    def delete(
        self, key: str, *, expect_revision: int | None = None, fence: Fence | None = None
    ) -> bool:
        full = self._key(key)
        if expect_revision is None and fence is None:
            return self._call(lambda client: bool(client.delete(full)))

        def op(client: Client) -> bool:
            t = client.transactions
            ok, responses = client.transaction(
                compare=self._conditions(t, full, expect_revision, fence),
                success=[t.delete(full)],
                failure=[t.get(full)],
            )
            if ok:
                return bool(responses[0].response_delete_range.deleted > 0)
            found = responses[0][0] if responses[0] else None
            actual = found[1].mod_revision if found else 0
            raise self._why(client, key, expect_revision, actual, fence)

        return self._call(op, idempotent=False)

    def _conditions(
        self, t: Any, full: str, expected: int | None, fence: Fence | None
    ) -> list[Any]:
        out = [] if expected is None else [_unchanged(t, full, expected)]
        if fence is not None:
            out.append(t.create(self._key(fence.key)) == fence.revision)
        return out

    def _why(
        self, client: Client, key: str, expected: int | None, actual: int, fence: Fence | None
    ) -> ConflictError:
        """Which condition failed: the fence takes precedence (we lost ownership)."""
        if fence is not None:
            _, meta = client.get(self._key(fence.key))
            now = meta.create_revision if meta is not None else 0
            if now != fence.revision:
                return FencedOut(
                    f"fenced out: {fence.key!r} is at revision {now}, not {fence.revision}; "
                    "another replica owns this cloudlet now"
                )
        return _conflict(key, expected if expected is not None else -1, actual)

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
    def lock(self, name: str, timeout: float) -> Iterator[None]:
        if not name:
            raise ValueError("lock name must not be empty")
        lease = self._call(lambda client: int(client.lease(self.lock_ttl).id))
        keeper = _KeepAlive(self, lease, name)
        keeper.start()
        try:
            self._acquire(name, lease, timeout)
            yield
        finally:
            keeper.stop()
            try:
                # Revoking the lease deletes the lock key with it.
                self._call(lambda client: client.revoke_lease(lease))
            except CloudletError as err:
                log.warning("lock %s: %s; it expires within %d s", name, err, self.lock_ttl)

    def _acquire(self, name: str, lease: int, timeout: float) -> None:
        key = self._locks + quote(name, safe="")
        holder = json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode()
        deadline = time.monotonic() + max(timeout, 0.0)
        pause = LOCK_POLL_MIN_S

        def attempt(client: Client) -> tuple[bytes, int] | None:
            # Idempotent: a retry finds the key held by our own lease.
            t = client.transactions
            ok, responses = client.transaction(
                compare=[t.create(key) == 0],
                success=[t.put(key, holder, lease=lease)],
                failure=[t.get(key)],
            )
            found = None if ok or not responses[0] else responses[0][0]
            return None if found is None else (found[0], found[1].lease_id)

        while True:
            found = self._call(attempt)
            if found is None or found[1] == lease:  # free, or ours already
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _lock_timeout(name, timeout, found[0])
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
    """Renews a lock's lease every third of its TTL until stopped."""

    def __init__(self, store: EtcdStore, lease: int, name: str) -> None:
        self.store, self.lease, self.name = store, lease, name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.store.connection.timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.store.lock_ttl / 3):
            try:
                answers = self.store._call(lambda client: list(client.refresh_lease(self.lease)))
            except CloudletError as err:
                log.warning("lock %s: cannot renew its lease: %s", self.name, err)
                continue
            except RuntimeError:
                return  # the store was closed under a held lock
            if answers and answers[-1].TTL <= 0 and not self._stop.is_set():
                log.error("lock %s: its lease expired; another process may take it", self.name)
                return


def open_etcd(endpoints: str) -> Store:
    """The etcd store for ``--etcd``, configured from ``CLOUDLET_ETCD_*``."""
    env = os.environ.get
    try:
        timeout = float(env("CLOUDLET_ETCD_TIMEOUT") or DEFAULT_TIMEOUT_S)
    except ValueError:
        raise CloudletError("CLOUDLET_ETCD_TIMEOUT must be a number of seconds") from None
    return EtcdStore(
        endpoints,
        prefix=env("CLOUDLET_ETCD_PREFIX", DEFAULT_PREFIX),
        user=env("CLOUDLET_ETCD_USER") or None,
        password=env("CLOUDLET_ETCD_PASSWORD") or None,
        ca_cert=env("CLOUDLET_ETCD_CACERT") or None,
        cert=env("CLOUDLET_ETCD_CERT") or None,
        key=env("CLOUDLET_ETCD_KEY") or None,
        timeout=timeout,
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


def _conflict(key: str, expected: int, actual: int) -> ConflictError:
    found = "absent" if actual == 0 else f"at revision {actual}"
    wanted = "absent" if expected == 0 else f"at revision {expected}"
    return ConflictError(
        f"conflict on key {key!r}: expected it {wanted} but it is {found} "
        f"(expected revision {expected}, actual revision {actual})"
    )


def _lock_timeout(name: str, timeout: float, raw: bytes) -> LockTimeout:
    try:
        holder = json.loads(raw)
        who = f"pid {holder['pid']} on {holder['host']}"
    except (ValueError, KeyError, TypeError):
        who = "holder unknown"
    return LockTimeout(
        f"cloudlet {name} is being synced by another process ({who}); gave up after {timeout:g} s"
    )
