"""Ownership over a real store: even split, takeover after expiry, fencing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudlet.errors import FencedOut
from cloudlet.store.ownership import Ownership, preferred
from cloudlet.store.records import StateRepo
from cloudlet.store.sqlite import SqliteStore, open_store

NAMES = [f"site-{i}" for i in range(60)]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = open_store(tmp_path)
    yield s
    s.close()


def pair(store: SqliteStore, clock: Clock) -> tuple[Ownership, Ownership]:
    a = Ownership(store, "replica-a", ttl=10, clock=clock)
    b = Ownership(store, "replica-b", ttl=10, clock=clock)
    a.heartbeat()
    b.heartbeat()
    return a, b


def test_rendezvous_is_stable_and_moves_little() -> None:
    two = {n: preferred(n, ["a", "b"]) for n in NAMES}
    three = {n: preferred(n, ["a", "b", "c"]) for n in NAMES}
    moved = [n for n in NAMES if two[n] != three[n]]
    assert all(three[n] == "c" for n in moved)  # only the newcomer's share moves
    assert 10 <= len(moved) <= 35


def test_two_replicas_split_the_work_evenly_and_disjointly(store: SqliteStore) -> None:
    clock = Clock()
    a, b = pair(store, clock)
    a.rebalance(NAMES)
    b.rebalance(NAMES)
    assert set(a.held).isdisjoint(b.held)
    assert set(a.held) | set(b.held) == set(NAMES)
    assert 18 <= len(a.held) <= 42


def test_a_dead_replicas_cloudlets_are_taken_over_only_after_expiry(store: SqliteStore) -> None:
    clock = Clock()
    a, b = pair(store, clock)
    a.rebalance(NAMES)
    b.rebalance(NAMES)
    a_names = set(a.held)
    clock.now += 5  # a stops heartbeating (dead or paused); b carries on
    b.heartbeat()
    b.renew()
    b.rebalance(NAMES)
    assert set(b.held).isdisjoint(a_names), "taken before the lease expired"
    clock.now += 6
    b.heartbeat()
    b.renew()
    b.rebalance(NAMES)
    assert set(b.held) == set(NAMES)


def test_a_replica_that_lost_its_lease_can_write_nothing(store: SqliteStore) -> None:
    clock = Clock()
    a, b = pair(store, clock)
    assert a.acquire("site-x")
    repo_a = StateRepo(store).fenced(a.fence)
    key = repo_a.journal_begin("site-x", "create:vm/one", "create", at=0, resource="vm/one")
    repo_a.journal_end(key)
    a.renew()  # renewal keeps a's fence valid
    repo_a.put_status("site-x", {"ok": True})
    clock.now += 11  # a paused past its lease
    assert b.acquire("site-x")
    with pytest.raises(FencedOut):
        repo_a.journal_begin("site-x", "create:vm/two", "create", at=0, resource="vm/two")
    with pytest.raises(FencedOut):
        repo_a.put_status("site-x", {"ok": False})
    assert a.renew() == ["site-x"]  # a learns it lost the cloudlet
    repo_b = StateRepo(store).fenced(b.fence)
    repo_b.put_status("site-x", {"owner": "b"})
    assert StateRepo(store).get_status("site-x") == {"owner": "b"}


def test_release_hands_over_at_once(store: SqliteStore) -> None:
    clock = Clock()
    a, b = pair(store, clock)
    assert a.acquire("site-x")
    assert not b.acquire("site-x")
    a.leave()
    assert b.acquire("site-x")
    assert b.live_replicas() == ["replica-b"]


def test_two_processes_under_one_replica_id_never_share_a_lease(store: SqliteStore) -> None:
    """The replica id is stable (the host name by default, for metrics and
    hashing); each process holds leases under a holder of its own, so a
    second one under the same id (or a restart) takes nothing still held."""
    clock = Clock()
    first = Ownership(store, "host-1", ttl=10, clock=clock)
    second = Ownership(store, "host-1", ttl=10, clock=clock)
    assert first.holder != second.holder and first.holder.startswith("host-1")
    first.heartbeat()
    assert first.acquire("site-x")
    assert not second.acquire("site-x")
    assert second.live_replicas() == ["host-1"]
    clock.now += 11  # the first died: its lease expires and the second takes over
    assert second.acquire("site-x")
    assert first.fence("site-x").revision != second.fence("site-x").revision
    assert first.renew() == ["site-x"]
