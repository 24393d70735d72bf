"""The Store contract: what every Store implementation must do.

A test module binds the cases to its store under a ``Test*`` name, either by
subclassing ``StoreContract`` (overriding the static ``make_store`` and
``caps``; mypy-friendly) or with ``store_contract_tests(make_store, caps=...)``,
which returns such a class; so the SQLite store and the etcd store run the
very same cases. ``make_store(path)`` must return a store whose
data is scoped to ``path`` (a fresh temporary directory per test): the SQLite
store keeps its file there, a networked store can derive a key namespace or
lock prefix from it. Calling it twice with the same path must give two
handles on the same data, like two processes would have.

The assertions stay etcd-compatible: revisions are compared, never expected
to start at a particular number.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest

import cloudlet
from cloudlet.errors import ConflictError, FencedOut, LockTimeout
from cloudlet.model.ports import PortMapping
from cloudlet.store.base import Fence, Fences, HeldLock, Store
from cloudlet.store.records import StateRepo, SyncRecord

SHORT = 0.2  # lock timeouts the tests expect to expire
PATIENT = 5.0  # lock timeouts the tests expect to be met


@attrs.frozen
class StoreCaps:
    """What the suite needs to know beyond ``make_store``.

    ``child_factory`` is ``"module:callable"``, a callable taking the same
    path as ``make_store``, importable in a fresh interpreter: the SIGKILL test
    takes the lock in a real child process. None skips that test.
    ``dead_holder_release_s`` bounds how long a killed holder's lock may
    linger (immediate for flock, a lease TTL for etcd).
    ``lock_can_be_lost``: a living holder can lose its lock (etcd's lease),
    so a held lock carries a fence; else (flock) it has none.
    """

    child_factory: str | None = None
    dead_holder_release_s: float = 5.0
    lock_reports_pid: bool = True
    lock_can_be_lost: bool = False


_CHILD = """
import importlib, sys, time
from pathlib import Path
module, _, attr = sys.argv[1].partition(":")
store = getattr(importlib.import_module(module), attr)(Path(sys.argv[2]))
with store.lock(sys.argv[3], 10.0):
    print("locked", flush=True)
    time.sleep(120)
"""


def _hold_in_thread(store: Store, name: str) -> tuple[threading.Event, threading.Thread]:
    """Take ``name`` in another thread; returns the event that releases it."""
    held, release = threading.Event(), threading.Event()

    def run() -> None:
        with store.lock(name, PATIENT):
            held.set()
            release.wait(PATIENT * 2)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert held.wait(PATIENT), "holder thread never got the lock"
    return release, thread


class StoreContract:
    """The cases; bound to a store by ``store_contract_tests``, not collected
    itself (its name does not start with ``Test``)."""

    caps: StoreCaps = StoreCaps()

    @staticmethod
    def make_store(path: Path) -> Store:
        raise NotImplementedError("bind with store_contract_tests()")

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        s = self.make_store(tmp_path)
        yield s
        s.close()

    @pytest.fixture
    def other(self, tmp_path: Path) -> Iterator[Store]:
        """A second handle on the same data, as another process has."""
        s = self.make_store(tmp_path)
        yield s
        s.close()

    @pytest.fixture
    def repo(self, store: Store) -> StateRepo:
        return StateRepo(store)

    # -- basic key-value --------------------------------------------------

    def test_get_missing_is_none(self, store: Store) -> None:
        assert store.get("/t/missing") is None

    def test_put_get_roundtrip_bytes(self, store: Store) -> None:
        for key, value in [("/t/a", b"hello"), ("/t/empty", b""), ("/t/bin", b"\x00\xff\x80")]:
            rev = store.put(key, value)
            entry = store.get(key)
            assert entry is not None
            assert (entry.key, entry.value, entry.mod_revision) == (key, value, rev)

    def test_put_overwrites(self, store: Store) -> None:
        store.put("/t/a", b"1")
        store.put("/t/a", b"2")
        entry = store.get("/t/a")
        assert entry is not None and entry.value == b"2"

    def test_delete(self, store: Store) -> None:
        store.put("/t/a", b"1")
        assert store.delete("/t/a") is True
        assert store.get("/t/a") is None
        assert store.delete("/t/a") is False

    def test_other_handle_sees_writes(self, store: Store, other: Store) -> None:
        rev = store.put("/t/shared", b"x")
        entry = other.get("/t/shared")
        assert entry is not None and entry.value == b"x" and entry.mod_revision == rev

    # -- revisions --------------------------------------------------------

    def test_revisions_monotonic_and_global(self, store: Store) -> None:
        start = store.revision()
        r1 = store.put("/t/a", b"1")
        r2 = store.put("/t/b", b"1")
        r3 = store.put("/t/a", b"2")
        assert start < r1 < r2 < r3 <= store.revision()
        b = store.get("/t/b")
        assert b is not None and b.mod_revision == r2

    def test_delete_advances_revision(self, store: Store) -> None:
        r1 = store.put("/t/a", b"1")
        store.delete("/t/a")
        assert store.revision() > r1
        assert store.put("/t/b", b"1") > r1 + 1

    def test_create_and_mod_revision(self, store: Store) -> None:
        r1 = store.put("/t/a", b"1")
        r2 = store.put("/t/a", b"2")
        entry = store.get("/t/a")
        assert entry is not None
        assert (entry.create_revision, entry.mod_revision) == (r1, r2)
        store.delete("/t/a")
        r3 = store.put("/t/a", b"3")
        entry = store.get("/t/a")
        assert entry is not None
        assert entry.create_revision == entry.mod_revision == r3

    # -- compare-and-swap -------------------------------------------------

    def test_cas_create_only_if_absent(self, store: Store) -> None:
        rev = store.put("/t/a", b"1", expect_revision=0)
        with pytest.raises(ConflictError) as err:
            store.put("/t/a", b"2", expect_revision=0)
        assert "/t/a" in str(err.value) and str(rev) in str(err.value)
        entry = store.get("/t/a")
        assert entry is not None and entry.value == b"1"

    def test_cas_success_and_stale(self, store: Store) -> None:
        r1 = store.put("/t/a", b"1")
        r2 = store.put("/t/a", b"2", expect_revision=r1)
        with pytest.raises(ConflictError) as err:
            store.put("/t/a", b"3", expect_revision=r1)
        message = str(err.value)
        assert "/t/a" in message and str(r1) in message and str(r2) in message
        entry = store.get("/t/a")
        assert entry is not None and entry.value == b"2"

    def test_cas_on_missing_key_with_revision_conflicts(self, store: Store) -> None:
        with pytest.raises(ConflictError):
            store.put("/t/a", b"1", expect_revision=7)
        assert store.get("/t/a") is None

    def test_failed_cas_writes_nothing(self, store: Store) -> None:
        rev = store.put("/t/a", b"1")
        before = store.revision()
        with pytest.raises(ConflictError):
            store.put("/t/a", b"2", expect_revision=rev + 1000)
        assert store.revision() == before

    def test_lost_update_between_two_writers(self, store: Store, other: Store) -> None:
        store.put("/t/counter", b"0")
        seen_a, seen_b = store.get("/t/counter"), other.get("/t/counter")
        assert seen_a is not None and seen_b is not None
        store.put("/t/counter", b"1", expect_revision=seen_a.mod_revision)
        with pytest.raises(ConflictError):
            other.put("/t/counter", b"1", expect_revision=seen_b.mod_revision)
        fresh = other.get("/t/counter")
        assert fresh is not None and fresh.value == b"1"
        other.put("/t/counter", b"2", expect_revision=fresh.mod_revision)
        final = store.get("/t/counter")
        assert final is not None and final.value == b"2"

    def test_fenced_writes_need_the_fence_unmoved(self, store: Store, other: Store) -> None:
        owner_rev = store.put("/t/owner", b"replica-a")
        fence = Fence("/t/owner", owner_rev)
        store.put("/t/data", b"1", fence=fence)
        store.put("/t/owner", b"replica-a, renewed")  # renewal in place keeps the fence
        store.put("/t/data", b"1", fence=fence)
        assert store.get("/t/data").value == b"1"  # type: ignore[union-attr]
        other.delete("/t/owner")  # another replica takes over: delete, create anew
        other.put("/t/owner", b"replica-b", expect_revision=0)
        with pytest.raises(FencedOut):
            store.put("/t/data", b"2", fence=fence)
        with pytest.raises(FencedOut):
            store.delete("/t/data", fence=fence)
        assert store.get("/t/data").value == b"1"  # type: ignore[union-attr]
        newer = Fence("/t/owner", store.get("/t/owner").create_revision)  # type: ignore[union-attr]
        assert store.delete("/t/data", fence=newer)

    def test_fence_and_expectation_together(self, store: Store) -> None:
        fence = Fence("/t/owner", store.put("/t/owner", b"a"))
        rev = store.put("/t/x", b"1", expect_revision=0, fence=fence)
        with pytest.raises(ConflictError) as err:
            store.put("/t/x", b"2", expect_revision=0, fence=fence)
        assert not isinstance(err.value, FencedOut)
        assert store.put("/t/x", b"2", expect_revision=rev, fence=fence) > rev

    def test_writes_fenced_on_several_fences_need_them_all(
        self, store: Store, other: Store
    ) -> None:
        a = Fence("/t/owner-a", store.put("/t/owner-a", b"a"))
        b = Fence("/t/owner-b", store.put("/t/owner-b", b"b"))
        rev = store.put("/t/data", b"1", fence=(a, b))
        assert store.put("/t/data", b"2", expect_revision=rev, fence=(a, b)) > rev
        assert store.delete("/t/data", fence=(b, a)) is True
        store.put("/t/data", b"3", fence=(a, b))
        other.delete("/t/owner-b")  # b is taken over, a is not
        other.put("/t/owner-b", b"taker", expect_revision=0)
        before = store.revision()
        for fences in [(a, b), (b, a)]:
            with pytest.raises(FencedOut, match="'/t/owner-b'") as err:
                store.put("/t/data", b"4", fence=fences)
            assert "/t/owner-a" not in str(err.value)
            with pytest.raises(FencedOut, match="'/t/owner-b'"):
                store.delete("/t/data", fence=fences)
        assert store.revision() == before  # nothing was written
        assert store.get("/t/data").value == b"3"  # type: ignore[union-attr]
        b = Fence("/t/owner-b", store.get("/t/owner-b").create_revision)  # type: ignore[union-attr]
        assert store.delete("/t/data", fence=(a, b)) is True
        with pytest.raises(ConflictError) as conflict:  # all fences hold: a plain conflict
            store.put("/t/data", b"5", expect_revision=rev, fence=(a, b))
        assert not isinstance(conflict.value, FencedOut)
        assert store.put("/t/data", b"5", fence=()) > before  # no fences: unconditional

    def test_delete_with_expectation(self, store: Store) -> None:
        r1 = store.put("/t/a", b"1")
        r2 = store.put("/t/a", b"2")
        with pytest.raises(ConflictError):
            store.delete("/t/a", expect_revision=r1)
        assert store.get("/t/a") is not None
        assert store.delete("/t/a", expect_revision=r2) is True
        assert store.get("/t/a") is None
        with pytest.raises(ConflictError):
            store.delete("/t/a", expect_revision=r2)

    # -- listing ----------------------------------------------------------

    def test_list_prefix_in_key_order(self, store: Store) -> None:
        for key in ["/t/a/2", "/t/a/10", "/t/ab/x", "/t/a/1", "/t/b", "/t/a"]:
            store.put(key, key.encode())
        entries = store.list("/t/a/")
        assert [e.key for e in entries] == ["/t/a/1", "/t/a/10", "/t/a/2"]
        assert all(e.value == e.key.encode() for e in entries)
        assert [e.key for e in store.list("/t/a")] == [
            "/t/a",
            "/t/a/1",
            "/t/a/10",
            "/t/a/2",
            "/t/ab/x",
        ]
        assert store.list("/t/zzz/") == []

    def test_list_reports_revisions(self, store: Store) -> None:
        r1 = store.put("/t/l/a", b"1")
        r2 = store.put("/t/l/a", b"2")
        [entry] = store.list("/t/l/")
        assert (entry.create_revision, entry.mod_revision) == (r1, r2)

    # -- locks ------------------------------------------------------------

    def test_lock_excludes_other_thread(self, store: Store) -> None:
        release, thread = _hold_in_thread(store, "berlin-1")
        try:
            with pytest.raises(LockTimeout), store.lock("berlin-1", SHORT):
                pass
        finally:
            release.set()
            thread.join(PATIENT)
        with store.lock("berlin-1", PATIENT):
            pass

    def test_lock_serializes_critical_sections(self, store: Store) -> None:
        inside, worst = [0], [0]
        guard = threading.Lock()

        def work() -> None:
            for _ in range(5):
                with store.lock("serial", PATIENT):
                    with guard:
                        inside[0] += 1
                        worst[0] = max(worst[0], inside[0])
                    time.sleep(0.002)
                    with guard:
                        inside[0] -= 1

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(PATIENT * 4)
        assert worst[0] == 1

    def test_distinct_locks_do_not_exclude(self, store: Store) -> None:
        with store.lock("one", SHORT), store.lock("two", SHORT):
            pass

    def test_lock_is_released_on_exit_and_error(self, store: Store) -> None:
        with pytest.raises(RuntimeError), store.lock("x", SHORT):
            raise RuntimeError("boom")
        with store.lock("x", SHORT):
            pass

    def test_a_held_lock_says_what_fences_it(self, store: Store, other: Store) -> None:
        owner = Fence("/t/owner", store.put("/t/owner", b"replica-a"))
        with store.lock("berlin-1", PATIENT) as held:
            assert isinstance(held, HeldLock) and held.name == "berlin-1"
            assert not held.lost.is_set()
            if not self.caps.lock_can_be_lost:
                assert held.fence is None  # cannot be lost while the process lives
                return
            assert held.fence is not None
            rev = store.put("/t/data", b"1", fence=held.fence)
            assert store.put("/t/data", b"2", fence=(owner, held.fence)) > rev
            assert other.put("/t/data", b"3", fence=(held.fence, owner)) > rev  # any handle
            other.delete("/t/owner")
            other.put("/t/owner", b"replica-b", expect_revision=0)
            with pytest.raises(FencedOut, match="'/t/owner'"):  # the lock holds, owner moved
                store.put("/t/data", b"4", fence=(held.fence, owner))
            owner = Fence("/t/owner", store.get("/t/owner").create_revision)  # type: ignore[union-attr]
            assert store.delete("/t/data", fence=(owner, held.fence)) is True
        assert not held.lost.is_set()  # released, not lost
        with other.lock("berlin-1", PATIENT) as rival:
            assert rival.fence is not None and rival.fence != held.fence
            before = store.revision()
            stale: list[Fences] = [held.fence, (owner, held.fence), (held.fence, owner)]
            for fences in stale:
                with pytest.raises(FencedOut, match="lock 'berlin-1'"):
                    store.put("/t/data", b"late", fence=fences)
                with pytest.raises(FencedOut, match="lock 'berlin-1'"):
                    store.delete("/t/owner", fence=fences)
            assert store.revision() == before and store.get("/t/data") is None
            assert store.put("/t/data", b"rival", fence=(owner, rival.fence)) > before

    def test_lock_timeout_is_prompt_and_names_the_cloudlet(self, store: Store) -> None:
        release, thread = _hold_in_thread(store, "berlin-1")
        try:
            started = time.monotonic()
            with pytest.raises(LockTimeout) as err, store.lock("berlin-1", 0.3):
                pass
            elapsed = time.monotonic() - started
        finally:
            release.set()
            thread.join(PATIENT)
        assert 0.29 <= elapsed < 1.5
        message = str(err.value)
        assert "berlin-1" in message and "another process" in message
        assert "gave up after 0.3 s" in message

    def test_lock_released_when_holder_killed(self, tmp_path: Path, store: Store) -> None:
        if self.caps.child_factory is None:
            pytest.skip("no child_factory: cannot take the lock in another process")
        child = _spawn_holder(self.caps.child_factory, tmp_path, "berlin-1")
        try:
            with pytest.raises(LockTimeout) as err, store.lock("berlin-1", SHORT):
                pass
            if self.caps.lock_reports_pid:
                assert f"pid {child.pid}" in str(err.value)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(PATIENT)
            if child.stdout is not None:
                child.stdout.close()
        with store.lock("berlin-1", self.caps.dead_holder_release_s):
            pass

    # -- typed records over the store --------------------------------------

    def test_desired_history_and_noop(self, repo: StateRepo) -> None:
        assert repo.get_desired("berlin-1") is None and repo.history("berlin-1") == []
        doc1 = {"metadata": {"name": "berlin-1"}, "spec": {"vms": []}}
        doc2 = {"metadata": {"name": "berlin-1"}, "spec": {"vms": [{"name": "game"}]}}
        r1 = repo.put_desired("berlin-1", doc1, at=100.0)
        assert repo.put_desired("berlin-1", dict(doc1), at=150.0) == r1  # unchanged
        r2 = repo.put_desired("berlin-1", doc2, at=200.0)
        assert r2 > r1
        current = repo.get_desired("berlin-1")
        assert current is not None
        assert (current.name, current.document, current.revision) == ("berlin-1", doc2, r2)
        hist = repo.history("berlin-1")
        assert [(h.revision, h.document, h.at) for h in hist] == [
            (r1, doc1, 100.0),
            (r2, doc2, 200.0),
        ]
        old = repo.get_revision("berlin-1", r1)
        assert old is not None and old.document == doc1
        assert repo.get_revision("berlin-1", r2 + 1000) is None

    def test_desired_rollback_adds_a_revision(self, repo: StateRepo) -> None:
        r1 = repo.put_desired("c", {"v": 1}, at=1.0)
        repo.put_desired("c", {"v": 2}, at=2.0)
        r3 = repo.put_desired("c", {"v": 1}, at=3.0)
        assert r3 > r1
        assert [h.document["v"] for h in repo.history("c")] == [1, 2, 1]

    def test_desired_cas(self, repo: StateRepo) -> None:
        r1 = repo.put_desired("c", {"v": 1}, at=1.0, expect_revision=0)
        with pytest.raises(ConflictError):
            repo.put_desired("c", {"v": 2}, at=2.0, expect_revision=0)
        r2 = repo.put_desired("c", {"v": 2}, at=2.0, expect_revision=r1)
        with pytest.raises(ConflictError):
            repo.put_desired("c", {"v": 3}, at=3.0, expect_revision=r1)
        current = repo.get_desired("c")
        assert current is not None and current.revision == r2

    def test_list_and_delete_desired(self, repo: StateRepo) -> None:
        repo.put_desired("b", {"n": "b"}, at=1.0)
        repo.put_desired("a", {"n": "a"}, at=1.0)
        repo.put_desired("ab", {"n": "ab"}, at=1.0)
        assert [d.name for d in repo.list_desired()] == ["a", "ab", "b"]
        repo.delete_desired("a")
        assert [d.name for d in repo.list_desired()] == ["ab", "b"]
        assert [h.document for h in repo.history("a")] == [{"n": "a"}]
        assert len(repo.history("ab")) == 1

    def test_ports_roundtrip(self, repo: StateRepo) -> None:
        assert repo.get_ports("c") == ()
        mappings = (
            PortMapping("root", "game", "tcp", 443, 443),
            PortMapping("root", "apps", "tcp", 443, 10000),
        )
        repo.put_ports("c", mappings)
        assert repo.get_ports("c") == mappings
        repo.put_ports("c", [])
        assert repo.get_ports("c") == ()

    def test_status_and_sync_record_roundtrip(self, repo: StateRepo) -> None:
        assert repo.get_status("c") is None and repo.get_sync("c") is None
        status = {"resources": [{"id": "vm/game", "state": "ok"}], "lastSync": 12.5}
        repo.put_status("c", status)
        record = SyncRecord(7, "failed", "2 actions failed", 12.5, 0.25, terminal=True)
        repo.put_sync("c", record)
        assert repo.get_status("c") == status
        assert repo.get_sync("c") == record
        assert repo.get_sync("other") is None

    def test_journal(self, repo: StateRepo) -> None:
        k1 = repo.journal_begin("c", "create:vm/game", "create", at=2.0, resource="vm/game")
        k2 = repo.journal_begin(
            "c", "create:network/internal", "create", at=1.0, resource="network/internal"
        )
        repo.journal_begin("other", "delete:vm/x", "delete", at=1.0, resource="vm/x", uid="u1")
        pending = repo.journal_pending("c")
        assert [(j.step, j.op, j.id, j.uid, j.at, j.key) for j in pending] == [
            ("create:network/internal", "create", "network/internal", None, 1.0, k2),
            ("create:vm/game", "create", "vm/game", None, 2.0, k1),
        ]
        repo.journal_end(k1)
        assert [j.step for j in repo.journal_pending("c")] == ["create:network/internal"]
        repo.journal_clear("c")
        assert repo.journal_pending("c") == []
        assert [(j.step, j.uid) for j in repo.journal_pending("other")] == [("delete:vm/x", "u1")]

    def test_journal_keeps_every_step_on_copies_of_one_id(self, repo: StateRepo) -> None:
        """Steps on copies of one id run at once: each is an entry of its own,
        and ending one leaves the others on record."""
        steps = [("update:vm/x", "update", "u1"), ("delete:vm/x@u2", "delete", "u2")]
        steps.append(("delete:vm/x@u3", "delete", "u3"))
        keys = [repo.journal_begin("c", s, op, 1.0, resource="vm/x", uid=u) for s, op, u in steps]
        assert len(set(keys)) == 3
        for k in keys:  # /cloudlet/journal/<name>/<quoted step key>
            assert k.startswith("/cloudlet/journal/c/")
            assert "/" not in k.removeprefix("/cloudlet/journal/c/"), k
        got = [(j.step, j.op, j.id, j.uid) for j in repo.journal_pending("c")]
        assert sorted(got) == sorted((s, op, "vm/x", u) for s, op, u in steps)
        repo.journal_end(keys[0])
        assert sorted(j.step for j in repo.journal_pending("c")) == [s for s, _, _ in steps[1:]]

    def test_journal_reads_an_entry_keyed_by_resource_id(self, repo: StateRepo) -> None:
        """What an older release left behind is still named after a crash."""
        key = "/cloudlet/journal/c/vm%2Fgame"
        repo.store.put(key, b'{"action_id":"vm/game","at":1.0,"op":"create"}')
        [entry] = repo.journal_pending("c")
        assert (entry.step, entry.op, entry.id, entry.uid, entry.key) == (
            "create:vm/game",
            "create",
            "vm/game",
            None,
            key,
        )

    def test_forget_keeps_history_only(self, repo: StateRepo) -> None:
        r1 = repo.put_desired("c", {"v": 1}, at=1.0)
        repo.put_desired("keep", {"v": 1}, at=1.0)
        repo.put_status("c", {"ok": True})
        repo.put_sync("c", SyncRecord(r1, "converged", "no changes", 2.0))
        repo.put_ports("c", [PortMapping("root", "game", "tcp", 80, 80)])
        repo.journal_begin("c", "delete:vm/game", "delete", at=1.0, resource="vm/game", uid="u")
        repo.forget("c")
        assert repo.get_desired("c") is None and repo.get_status("c") is None
        assert repo.get_sync("c") is None and repo.get_ports("c") == ()
        assert repo.journal_pending("c") == []
        assert [h.revision for h in repo.history("c")] == [r1]
        assert repo.get_desired("keep") is not None


def store_contract_tests(
    make_store: Callable[[Path], Store], *, caps: StoreCaps
) -> type[StoreContract]:
    """The contract suite as a class bound to one Store constructor."""
    attrs_ = {"make_store": staticmethod(make_store), "caps": caps}
    return type("BoundStoreContract", (StoreContract,), attrs_)


def _spawn_holder(factory: str, path: Path, name: str) -> subprocess.Popen[str]:
    """A real process holding lock ``name``, started once it reports so."""
    root = str(Path(cloudlet.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, factory, str(path), name],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    line = child.stdout.readline()  # EOF ("") if the child failed to start
    if line.strip() != "locked":
        child.kill()
        child.wait(PATIENT)
        child.stdout.close()
        pytest.fail(f"lock holder process did not start (exit {child.returncode})")
    return child


def cas_increment(store: Store, key: str) -> int:
    """One CAS increment, retried until it wins; returns the conflicts met."""
    conflicts = 0
    while True:
        entry = store.get(key)
        current = int(entry.value) if entry else 0
        time.sleep(0)  # let other writers run between read and write, as real work would
        try:
            store.put(
                key, str(current + 1).encode(), expect_revision=entry.mod_revision if entry else 0
            )
            return conflicts
        except ConflictError:
            conflicts += 1


def concurrent_increments(
    shared: Store,
    stores: list[Store],
    increments: int,
    join_s: float = 60.0,
    *,
    final_revision: int | None = None,
) -> None:
    """Every store in ``stores`` increments one counter at once (read, CAS,
    retry); the final count proves no update was lost. Closes the stores."""
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def run(store: Store) -> None:
        try:
            barrier.wait()
            for _ in range(increments):
                cas_increment(store, "/counter")
        except BaseException as exc:  # surfaced below: threads swallow errors
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(join_s)
    try:
        assert errors == []
        entry = shared.get("/counter")
        assert entry is not None and int(entry.value) == len(stores) * increments
        if final_revision is not None:  # a private store: one revision per write
            assert shared.revision() == final_revision
    finally:
        for s in {id(s): s for s in [shared, *stores]}.values():
            s.close()
