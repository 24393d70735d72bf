"""Typed records of the engine's state, on top of any ``Store``.

The Store is a plain revisioned key-value space; this module decides what
lives where, so the SQLite and etcd stores hold the same layout and tools can
read either. Every value is compact JSON (sorted keys) in UTF-8.

Key layout (``<name>`` is a cloudlet name, which never contains ``/``)::

    /cloudlet/desired/<name>                 {"document": {...}, "at": t}
    /cloudlet/history/<name>/<rev:020d>      {"document": {...}, "at": t}
    /cloudlet/sync/<name>                    SyncRecord: the last reconcile's outcome
    /cloudlet/status/<name>                  {...}   what `cloudlet status` shows
    /cloudlet/observed/<name>                {"at", "revision", "objects": [...]}
    /cloudlet/ports/<name>                   [PortMapping, ...]
    /cloudlet/journal/<name>/<step-key>      {"step", "op", "id", "uid"?, "at", "by"?}
    /cloudlet/tokens/<token-id>              {"sha256", "cloudlet", "vm", "issued", "expires"}
    /cloudlet/audit/<name>/<start>-<session> {"token", "cloudlet", "vm", "start", "end", ...}

- ``desired`` is the operator's spec as a JSON document; its key's mod
  revision is the document's revision (what ``history`` and ``rollback --to``
  name).
- ``history`` entries are immutable, keyed by the revision of the desired
  write they record, zero-padded so key order is revision order. They
  survive ``forget`` so a destroyed cloudlet's past can still be read.
  Because desired and its history entry are two writes, a crash between them
  could lose an entry; the desired value carries its own timestamp so the
  missing entry is rebuilt (``_backfill``) before the next overwrite or
  delete, and ``history`` reports the current revision regardless.
- ``sync`` is the engine's own record of its last reconcile (revision,
  outcome, terminal or not): what the daemon decides a resync from. The
  ``status`` beside it is Shepherd's display document; nothing reads it back
  to decide anything.
- ``observed`` is the last observation a reconcile made (each object's
  uid, tag, kind, attrs and deps), kept so that ``plan --offline`` can
  preview a change while the site cannot be reached. Like the status it
  is for operators only: the engine always observes afresh before acting.
- ``journal`` holds steps that were started and not yet finished; after a
  crash the engine finds them here and re-observes those resources before
  retrying. One entry per step of the plan's graph, so steps on copies of
  one id that run at once are each on record: ``<step-key>`` is the step's
  key (``phase:id``, or ``phase:id@uid`` for one observed copy of several),
  percent-quoted; the value names the phase (``op``), the resource ``id``
  and, for a step on an existing object, that object's ``uid``.

- ``tokens`` are the relay's short-lived access tokens (``cloudlet/relay/tokens.py``):
  only the SHA-256 of each token's secret is kept, so reading the store
  grants no shell, with the sessions it opened (taken by CAS); ``audit`` is
  one record per relay session, written at its start and again at its end,
  and one per refused attempt (``cloudlet/relay/audit.py``), under
  ``audit/<cloudlet>/`` or ``audit/-/`` when it concerns none.

No value holds a secret: documents, observations, port numbers and journal
entries are all things an operator may print. Credentials stay with the
orchestrator configuration (clouds.yaml and the like), never in the store,
which may be a shared etcd readable by every replica.

Timestamps are arguments (``at``): this module reads no clock, so tests and
the engine decide what "now" is.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import quote

import attrs
import cattrs

from cloudlet.errors import ConflictError, InvalidName, LockTimeout
from cloudlet.model.ports import PortMapping
from cloudlet.model.resources import Observed
from cloudlet.store.base import Entry, Fence, Fences, HeldLock, Store, fence_list

ROOT = "/cloudlet"
DESIRED = f"{ROOT}/desired/"
HISTORY = f"{ROOT}/history/"
SYNC = f"{ROOT}/sync/"
STATUS = f"{ROOT}/status/"
PORTS = f"{ROOT}/ports/"
OBSERVED = f"{ROOT}/observed/"
JOURNAL = f"{ROOT}/journal/"
TOKENS = f"{ROOT}/tokens/"
AUDIT = f"{ROOT}/audit/"

_CAS_ATTEMPTS = 16
_converter = cattrs.Converter()


@attrs.frozen
class DesiredRecord:
    name: str
    document: dict[str, Any]
    revision: int


@attrs.frozen
class HistoryRecord:
    revision: int
    document: dict[str, Any]
    at: float


@attrs.frozen
class SyncRecord:
    """What the engine's last reconcile of a cloudlet came to.

    ``outcome``: "converged"; "failed" (a step failed, the cloud could not be
    observed, or the spec cannot be reconciled); or "interrupted" (stopped on
    request, by a signal or the daemon's shutdown: running calls finished,
    the rest never started; nothing failed and the next sync finishes).
    ``terminal``: no retry can fix it (an invalid stored spec, a plan that
    cannot be ordered); the daemon waits for a new desired revision.
    """

    revision: int | None
    outcome: str
    message: str
    at: float
    wall_seconds: float = 0.0
    terminal: bool = False

    @property
    def converged(self) -> bool:
        return self.outcome == "converged"


@attrs.frozen
class ObservedRecord:
    """The objects one reconcile saw, when, and under which desired revision."""

    objects: tuple[Observed, ...]
    at: float
    revision: int | None = None


def _observed_to_json(record: ObservedRecord) -> dict[str, Any]:
    objects = [
        {
            "uid": o.uid,
            "id": o.id,
            "kind": o.kind,
            "attrs": {k: list(v) if isinstance(v, tuple) else v for k, v in o.attrs.items()},
            "deps": list(o.deps),
        }
        for o in record.objects
    ]
    return {"at": record.at, "revision": record.revision, "objects": objects}


def _observed_from_json(data: dict[str, Any]) -> ObservedRecord:
    objects = tuple(
        Observed(o["uid"], o.get("id"), o["kind"], o.get("attrs", {}), tuple(o.get("deps", ())))
        for o in data.get("objects", ())
    )
    return ObservedRecord(objects, float(data["at"]), data.get("revision"))


@attrs.frozen
class JournalEntry:
    """A step begun and not yet ended: what recovery names as in flight."""

    #: The step's key in the plan's graph (``phase:id`` or ``phase:id@uid``).
    step: str
    #: The phase the provider was called for (create, update, delete).
    op: str
    #: The resource id.
    id: str
    #: The existing object the step acts on; None for a create.
    uid: str | None
    at: float
    #: The store key, for ``journal_end``.
    key: str
    by: str | None = None


def encode(value: Any) -> bytes:
    """Canonical JSON, so equal documents are equal bytes (the no-op check)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def decode(raw: bytes) -> Any:
    return json.loads(raw.decode())


def _check_name(name: str) -> str:
    if not name or "/" in name:
        raise InvalidName(f"no cloudlet can be named {name!r} (names match [a-z][a-z0-9-]{{0,39}})")
    return name


def lock_name(name: str) -> str:
    """The per-cloudlet lock every writer of its desired state and every
    reconcile of it holds: named here alone."""
    return f"sync-{_check_name(name)}"


@contextlib.contextmanager
def cloudlet_lock(store: Store, name: str, timeout: float) -> Iterator[HeldLock]:
    """Hold cloudlet ``name``'s lock (``lock_name``). If another process
    keeps it past ``timeout``, the error names the cloudlet, not the
    store's lock key: ``cloudlet X is being synced by another process``."""
    with contextlib.ExitStack() as stack:
        try:
            held = stack.enter_context(store.lock(lock_name(name), timeout))
        except LockTimeout as err:
            raise LockTimeout(
                f"cloudlet {name} is being synced by another process ({err.holder});"
                f" waited {err.waited:g} s (CLOUDLET_LOCK_TIMEOUT sets how long)",
                holder=err.holder,
                waited=err.waited,
            ) from None
        yield held


def history_key(name: str, revision: int) -> str:
    return f"{HISTORY}{_check_name(name)}/{revision:020d}"


def journal_key(name: str, step: str) -> str:
    return f"{JOURNAL}{_check_name(name)}/{quote(step, safe='')}"


class StateRepo:
    """The engine's view of the store: desired state with history, observed
    state and status, LB port allocations, and the action journal."""

    def __init__(
        self,
        store: Store,
        fence_for: Callable[[str], Fences | None] | None = None,
        actor: str | None = None,
    ) -> None:
        self.store = store
        self.fence_for = fence_for
        #: Who acts (a daemon replica's id), recorded in each journal entry.
        self.actor = actor

    def fenced(
        self, fence_for: Callable[[str], Fences | None], actor: str | None = None
    ) -> StateRepo:
        """The same store, with every write the engine makes for a cloudlet
        conditional on the fence ``fence_for(name)`` (its ownership record):
        a replica that lost a cloudlet can no longer write, or start an
        action, for it. ``actor`` names the replica in the journal."""
        return StateRepo(self.store, fence_for, actor)

    def also_fenced(self, fence: Fence) -> StateRepo:
        """The same repo with every write also conditional on ``fence`` (a
        held lock's): once another process holds the lock, nothing more of
        ours lands, whatever the ownership record says."""
        inner = self.fence_for

        def fence_for(name: str) -> Fences | None:
            own = inner(name) if inner is not None else None
            if own is None:
                return fence
            return (*fence_list(own), fence)

        return StateRepo(self.store, fence_for, self.actor)

    def _fence(self, name: str) -> Fences | None:
        return self.fence_for(name) if self.fence_for is not None else None

    # -- desired state and its history --------------------------------------

    def put_desired(
        self,
        name: str,
        document: dict[str, Any],
        *,
        at: float,
        expect_revision: int | None = None,
    ) -> int:
        """Store ``document`` as the desired state; returns its revision.

        An unchanged document is a no-op returning the current revision, so
        re-applying the same file does not grow the history. Without
        ``expect_revision`` the write still uses CAS internally (retrying on
        a race) so that no revision ever escapes the history.
        """
        key = DESIRED + _check_name(name)
        value = encode({"document": document, "at": at})
        for _ in range(_CAS_ATTEMPTS):
            current = self.store.get(key)
            current_rev = current.mod_revision if current else 0
            if expect_revision is not None and expect_revision != current_rev:
                raise ConflictError(
                    f"desired state of {name} changed: expected revision "
                    f"{expect_revision}, found {current_rev}"
                )
            if current is not None:
                if encode(decode(current.value)["document"]) == encode(document):
                    return current.mod_revision
                self._backfill(name, current)
            try:
                rev = self.store.put(key, value, expect_revision=current_rev)
            except ConflictError:
                if expect_revision is not None:
                    raise
                continue
            self._put_history(name, rev, value)
            return rev
        raise ConflictError(f"desired state of {name} kept changing; gave up writing it")

    def get_desired(self, name: str) -> DesiredRecord | None:
        entry = self.store.get(DESIRED + _check_name(name))
        return _desired(name, entry) if entry else None

    def list_desired(self) -> list[DesiredRecord]:
        return [_desired(e.key[len(DESIRED) :], e) for e in self.store.list(DESIRED)]

    def delete_desired(self, name: str) -> bool:
        """Remove the desired state (its history stays); whether it existed."""
        key = DESIRED + _check_name(name)
        current = self.store.get(key)
        if current is None:
            return False
        self._backfill(name, current)
        return self.store.delete(key)

    def history(self, name: str) -> list[HistoryRecord]:
        """Every stored revision of the desired state, oldest first."""
        records = [_history(e) for e in self.store.list(f"{HISTORY}{_check_name(name)}/")]
        current = self.store.get(DESIRED + name)
        if current is not None and all(r.revision != current.mod_revision for r in records):
            records.append(_history(current))
        return records

    def get_revision(self, name: str, revision: int) -> HistoryRecord | None:
        entry = self.store.get(history_key(name, revision))
        if entry is None:
            current = self.store.get(DESIRED + name)
            if current is not None and current.mod_revision == revision:
                entry = current
        return _history(entry) if entry else None

    def _backfill(self, name: str, current: Entry) -> None:
        """Make sure the revision about to be replaced is in the history."""
        if self.store.get(history_key(name, current.mod_revision)) is None:
            self._put_history(name, current.mod_revision, current.value)

    def _put_history(self, name: str, revision: int, value: bytes) -> None:
        # A conflict means someone recorded this same immutable revision already.
        with contextlib.suppress(ConflictError):
            self.store.put(history_key(name, revision), value, expect_revision=0)

    # -- the last reconcile, status and ports --------------------------------

    def put_sync(self, name: str, record: SyncRecord) -> int:
        data = encode(_converter.unstructure(record))
        return self.store.put(SYNC + _check_name(name), data, fence=self._fence(name))

    def get_sync(self, name: str) -> SyncRecord | None:
        data = self._get_dict(SYNC + _check_name(name))
        return None if data is None else _converter.structure(data, SyncRecord)

    def put_status(self, name: str, status: dict[str, Any]) -> int:
        return self.store.put(STATUS + _check_name(name), encode(status), fence=self._fence(name))

    def get_status(self, name: str) -> dict[str, Any] | None:
        return self._get_dict(STATUS + _check_name(name))

    def put_observed(self, name: str, record: ObservedRecord) -> int:
        data = encode(_observed_to_json(record))
        return self.store.put(OBSERVED + _check_name(name), data, fence=self._fence(name))

    def get_observed(self, name: str) -> ObservedRecord | None:
        """The last reconcile's observation, for previews (``plan --offline``)."""
        data = self._get_dict(OBSERVED + _check_name(name))
        return None if data is None else _observed_from_json(data)

    def put_ports(self, name: str, mappings: Iterable[PortMapping]) -> int:
        data = _converter.unstructure(list(mappings), list[PortMapping])
        return self.store.put(PORTS + _check_name(name), encode(data), fence=self._fence(name))

    def get_ports(self, name: str) -> tuple[PortMapping, ...]:
        """Allocations kept from the last sync; empty if none were made."""
        data = self._get_json(PORTS + _check_name(name))
        if not data:
            return ()
        return tuple(_converter.structure(data, list[PortMapping]))

    def _get_json(self, key: str) -> Any:
        entry = self.store.get(key)
        return decode(entry.value) if entry else None

    def _get_dict(self, key: str) -> dict[str, Any] | None:
        value = self._get_json(key)
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"store key {key!r} holds {type(value).__name__}, not an object")
        return value

    # -- journal of in-flight actions ---------------------------------------

    def journal_begin(
        self, name: str, step: str, op: str, at: float, *, resource: str, uid: str | None = None
    ) -> str:
        """Record that step ``step`` (its graph key) of phase ``op`` on
        ``resource`` started, acting on the existing object ``uid`` if any;
        returns the key ``journal_end`` takes."""
        key = journal_key(name, step)
        entry: dict[str, Any] = {"step": step, "op": op, "id": resource, "at": at}
        if uid is not None:
            entry["uid"] = uid
        if self.actor is not None:
            entry["by"] = self.actor
        record = encode(entry)
        self.store.put(key, record, fence=self._fence(name))
        return key

    def journal_end(self, key: str) -> None:
        if not key.startswith(JOURNAL):
            raise ValueError(f"not a journal key: {key!r}")
        name = key[len(JOURNAL) :].partition("/")[0]
        self.store.delete(key, fence=self._fence(name))

    def journal_pending(self, name: str) -> list[JournalEntry]:
        """Steps begun and never ended (in flight, or cut off by a crash)."""
        listed = self.store.list(f"{JOURNAL}{_check_name(name)}/")
        entries = [self._journal_entry(e) for e in listed]
        return sorted(entries, key=lambda j: (j.at, j.key))

    @staticmethod
    def _journal_entry(entry: Entry) -> JournalEntry:
        data = decode(entry.value)
        op, at = data["op"], float(data["at"])
        # Left by a release that journaled by resource id: {"action_id": id}.
        rid = data.get("id", data.get("action_id"))
        step = data.get("step") or f"{op}:{rid}"
        return JournalEntry(step, op, rid, data.get("uid"), at, entry.key, data.get("by"))

    def journal_clear(self, name: str) -> None:
        for e in self.store.list(f"{JOURNAL}{_check_name(name)}/"):
            self.store.delete(e.key, fence=self._fence(name))

    # -- lifecycle -----------------------------------------------------------

    def forget(self, name: str) -> None:
        """Drop everything kept for a destroyed cloudlet except its history,
        so ``cloudlet history`` can still explain what it was."""
        self.delete_desired(name)
        for prefix in (SYNC, STATUS, OBSERVED, PORTS):
            self.store.delete(prefix + name)
        self.journal_clear(name)


def _desired(name: str, entry: Entry) -> DesiredRecord:
    return DesiredRecord(name, decode(entry.value)["document"], entry.mod_revision)


def _history(entry: Entry) -> HistoryRecord:
    data = decode(entry.value)
    # A history key's own mod revision is a later write; the recorded
    # revision is the one in the key (or the desired key's mod revision).
    if entry.key.startswith(HISTORY):
        revision = int(entry.key.rsplit("/", 1)[1])
    else:
        revision = entry.mod_revision
    return HistoryRecord(revision, data["document"], float(data["at"]))
