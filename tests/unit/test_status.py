"""Shepherd's typed status: conditions keep their transition time, and the
JSON at the edges keeps DESIGN.md's shapes (extended, never broken)."""

from __future__ import annotations

from collections.abc import Iterator

from pytest import MonkeyPatch

from cloudlet.model.expand import Expansion
from cloudlet.model.ports import PortMapping
from cloudlet.model.resources import Observed, Resource
from cloudlet.shepherd.codec import status_from_json, status_to_json
from cloudlet.shepherd.status import build_status
from cloudlet.store.records import SyncRecord

VM = Resource("vm/game", {"flavor": "m1.small"})
LB = Resource("lb/root", {"address": "port/root.0.ext"})
PORT = Resource("port/root.0.ext", {"network": "@external"})
EXPANSION = Expansion("c", (VM, LB, PORT), (PortMapping("root", "game", "tcp", 443, 10000),))
SEEN = [
    Observed("u1", "vm/game", "vm", {"flavor": "m1.small"}, ()),
    Observed("u2", "lb/root", "lb", {"address": "port/root.0.ext"}, ()),
    Observed(
        "u3", "port/root.0.ext", "port", {"network": "@external", "address": "198.18.0.7"}, ()
    ),
]
SYNCED = SyncRecord(3, "converged", "no changes", 1.0, 0.5)


def test_a_condition_keeps_its_transition_time_until_its_status_flips() -> None:
    first = build_status(EXPANSION, SEEN, at=10.0, last_sync=SYNCED)
    again = build_status(EXPANSION, SEEN, at=20.0, last_sync=SYNCED, previous=first)
    ready = again.condition("Ready")
    assert ready is not None and ready.ok and ready.last_transition_time == 10.0
    drifted = [SEEN[0].__class__("u1", "vm/game", "vm", {"flavor": "m1.large"}, ()), *SEEN[1:]]
    later = build_status(EXPANSION, drifted, at=30.0, last_sync=SYNCED, previous=again)
    flipped = later.condition("Ready")
    assert flipped is not None and not flipped.ok and flipped.last_transition_time == 30.0
    synced = later.condition("Synced")
    assert synced is not None and synced.last_transition_time == 10.0  # still True since 10


def test_the_json_keeps_design_shapes_and_reads_back() -> None:
    status = build_status(EXPANSION, SEEN, at=10.0, last_sync=SYNCED)
    data = status_to_json(status)
    assert set(data) >= {"cloudlet", "resources", "drift", "conditions", "lastSync", "portMappings"}
    assert data["lastSync"] == {
        "at": 1.0,
        "outcome": "converged",
        "message": "no changes",
        "wallSeconds": 0.5,
        "revision": 3,
    }
    assert data["portMappings"] == [
        {
            "loadBalancer": "root",
            "target": "game",
            "protocol": "tcp",
            "port": 443,
            "publicPort": 10000,
            "publicIp": "198.18.0.7",
        }
    ]
    port = next(r for r in data["resources"] if r["id"] == "port/root.0.ext")
    assert port == {
        "id": "port/root.0.ext",
        "kind": "port",
        "state": "ready",
        "uid": "u3",
        "address": "198.18.0.7",
    }
    vm = next(r for r in data["resources"] if r["id"] == "vm/game")
    assert vm == {"id": "vm/game", "kind": "vm", "state": "ready", "uid": "u1"}
    assert {"type", "status", "reason", "message", "lastTransitionTime"} == set(
        data["conditions"][0]
    )
    assert status_from_json(data) == status


class _Walks(list[Observed]):
    """An observation that counts how often it is walked from the start."""

    walks = 0

    def __iter__(self) -> Iterator[Observed]:
        self.walks += 1
        return super().__iter__()


def test_a_status_indexes_once_however_many_port_mappings(monkeypatch: MonkeyPatch) -> None:
    """Issue 13: looking each mapping's LB up by re-indexing the expansion
    and scanning the observation made status quadratic. Counted, not timed:
    each expansion is indexed once per status, and the observation walked
    a fixed number of times, with 400 mappings as with one."""
    vms = [Resource(f"vm/app-{i}", {"flavor": "m1.small"}) for i in range(400)]
    mappings = tuple(PortMapping("root", f"app-{i}", "tcp", 443, 10000 + i) for i in range(400))
    expansion = Expansion("c", (*vms, LB, PORT), mappings)
    synced = Expansion("c", (LB, PORT), ())
    seen = _Walks([*(Observed(f"u{r.id}", r.id, "vm", dict(r.attrs), ()) for r in vms), *SEEN[1:]])
    calls: list[int] = []
    real = Expansion.by_id

    def counted(self: Expansion) -> dict[str, Resource]:
        calls.append(id(self))
        return real(self)

    monkeypatch.setattr(Expansion, "by_id", counted)
    status = build_status(
        expansion, seen, at=1.0, last_sync=SYNCED, desired_revision=4, synced=synced
    )
    assert sorted(calls) == sorted([id(expansion), id(synced)])  # each indexed once
    assert seen.walks <= 2
    assert len(status.port_mappings) == 400
    assert {m.public_ip for m in status.port_mappings} == {"198.18.0.7"}
    assert {r.state for r in status.resources} == {"ready"}
