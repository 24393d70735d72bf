"""The journal and the attempt counts are the step's, like the walk: steps on
copies of one id, and a replacement's delete and create, each on their own.

Issue 9: three observed copies of ``vm/x`` plan to three steps with no edges
between them; journaled by resource id they shared one entry, so the first
to finish cleared it while two provider calls were still in flight.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import World
from helpers import cloudlet
from rich.console import Console

from cloudlet.cmd.render import print_plan
from cloudlet.engine.apply import StepRunner
from cloudlet.engine.retry import RetryPolicy
from cloudlet.engine.walk import walk
from cloudlet.errors import ProviderError
from cloudlet.model.resources import Observed, Resource
from cloudlet.model.spec import Expose, PortSpec, Vm
from cloudlet.planner import Plan, plan_actions
from cloudlet.providers.fake import FakeProvider
from cloudlet.store.records import JournalEntry, StateRepo
from cloudlet.store.sqlite import open_store

NAME = "c"
WANT = Resource("vm/x", {"image": "a", "flavor": "m1.medium"})


def copies(n: int = 3) -> list[Observed]:
    """``n`` objects tagged ``vm/x`` (uids u1, u2, ...), all with a stale flavor."""
    return [
        Observed(f"u{i}", "vm/x", "vm", {"image": "a", "flavor": "m1.small"})
        for i in range(1, n + 1)
    ]


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[StateRepo]:
    store = open_store(tmp_path)
    yield StateRepo(store)
    store.close()


# -- the planner: one step per copy -------------------------------------------------


def test_copies_of_a_wanted_id_are_independent_steps_of_their_own() -> None:
    plan = plan_actions(NAME, [WANT], copies())
    assert set(plan.graph.nodes) == {"update:vm/x", "delete:vm/x@u2", "delete:vm/x@u3"}
    assert list(plan.graph.edges) == []
    assert sorted((a.op, a.uid) for a in plan.actions) == [
        ("delete", "u2"),
        ("delete", "u3"),
        ("update", "u1"),
    ]


def test_every_copy_of_an_unwanted_id_gets_a_delete_step() -> None:
    """Before: three ``delete:vm/x`` changes, one graph node; two copies survived."""
    plan = plan_actions(NAME, [], copies())
    assert set(plan.graph.nodes) == {"delete:vm/x", "delete:vm/x@u2", "delete:vm/x@u3"}
    assert list(plan.graph.edges) == []
    deleted = {plan.step(k).change.current.uid for k in plan.graph}  # type: ignore[union-attr]
    assert deleted == {"u1", "u2", "u3"}
    assert plan.counts()["delete"] == 3


def test_a_dependency_waits_for_the_delete_of_every_copy() -> None:
    """A port's delete waits for each copy of the VM on it to go first."""
    port = Observed("p1", "port/x", "port", {"subnet": "subnet/internal"})
    vms = [Observed(o.uid, o.id, o.kind, o.attrs, ("port/x",)) for o in copies()]
    plan = plan_actions(NAME, [], [port, *vms])
    before_port = set(plan.graph.predecessors("delete:port/x"))
    assert before_port == {"delete:vm/x", "delete:vm/x@u2", "delete:vm/x@u3"}


def test_plan_json_names_the_copy_each_action_acts_on() -> None:
    plan = plan_actions(NAME, [], copies())
    doc = plan.to_json()["actions"]
    assert [(a["op"], a["id"], a["uid"]) for a in doc] == [
        ("delete", "vm/x", "u1"),
        ("delete", "vm/x", "u2"),
        ("delete", "vm/x", "u3"),
    ]
    created = plan_actions(NAME, [WANT], []).to_json()["actions"]
    assert "uid" not in created[0]  # a create acts on no existing object


def test_the_human_plan_tells_copies_apart() -> None:
    out = io.StringIO()
    print_plan(
        Console(file=out, width=300, color_system=None), plan_actions(NAME, [WANT], copies())
    )
    lines = out.getvalue().splitlines()[1:]
    assert sorted(line.split()[:2] for line in lines) == [
        ["-", "vm/x@u2"],
        ["-", "vm/x@u3"],
        ["~", "vm/x@u1"],
    ]
    out = io.StringIO()
    print_plan(Console(file=out, width=300, color_system=None), plan_actions(NAME, [WANT], []))
    assert out.getvalue().splitlines()[1].split()[:2] == ["+", "vm/x"]  # one action: no uid


# -- the runner: one journal entry per step in flight -------------------------------


class BarrierProvider:
    """Every call waits until ``parties`` calls are in flight at once; the
    barrier's action (run once, while they all wait) reads the journal."""

    def __init__(self, repo: StateRepo, parties: int) -> None:
        self.seen: list[list[JournalEntry]] = []
        self.barrier = threading.Barrier(
            parties, action=lambda: self.seen.append(repo.journal_pending(NAME)), timeout=5
        )

    def observe(self, owner: str) -> list[Observed]:
        return []

    def create(self, owner: str, resource: Resource) -> Observed:
        self.barrier.wait()
        return Observed("new", resource.id, resource.kind, resource.attrs, resource.deps)

    def update(self, owner: str, resource: Resource, current: Observed) -> Observed:
        self.barrier.wait()
        return current

    def delete(self, owner: str, current: Observed) -> None:
        self.barrier.wait()

    def replacement_reason(self, resource: Resource, current: Observed) -> str | None:
        return None

    def close(self) -> None:
        return None


def run(plan: Plan, provider: object, repo: StateRepo) -> StepRunner:
    runner = StepRunner(NAME, provider, repo, RetryPolicy(), lambda s: None, lambda: 1.0, 0)  # type: ignore[arg-type]
    results = walk(plan.graph, lambda key: runner(plan.step(key)), parallelism=3, priority={})
    assert {k: r.outcome for k, r in results.items()} == dict.fromkeys(plan.graph, "ok")
    return runner


@pytest.mark.parametrize(
    ("desired", "steps"),
    [
        ([WANT], [("update:vm/x", "update", "u1")]),
        ([], [("delete:vm/x", "delete", "u1")]),
    ],
    ids=["wanted", "unwanted"],
)
def test_three_copies_in_flight_at_once_are_three_journal_entries(
    repo: StateRepo, desired: list[Resource], steps: list[tuple[str, str, str]]
) -> None:
    plan = plan_actions(NAME, desired, copies())
    provider = BarrierProvider(repo, parties=3)
    runner = run(plan, provider, repo)
    [in_flight] = provider.seen
    expected = [*steps, ("delete:vm/x@u2", "delete", "u2"), ("delete:vm/x@u3", "delete", "u3")]
    got = [(j.step, j.op, j.id, j.uid) for j in in_flight]
    assert sorted(got) == sorted((s, op, "vm/x", uid) for s, op, uid in expected)
    assert repo.journal_pending(NAME) == []  # each step ended its own entry
    assert runner.attempts == dict.fromkeys(plan.graph, 1)


class FlakyDeletes:
    """The simulated cloud, whose deletes of ``rid`` fail ``times`` times first."""

    def __init__(self, inner: FakeProvider, rid: str, times: int) -> None:
        self.inner, self.rid, self.left = inner, rid, times

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def delete(self, owner: str, current: Observed) -> None:
        if current.id == self.rid and self.left > 0:
            self.left -= 1
            raise ProviderError(f"{self.rid}: busy", transient=True)
        self.inner.delete(owner, current)


def test_a_replacements_delete_and_create_count_their_own_attempts() -> None:
    world = World()
    try:
        assert world.sync(cloudlet()).converged
        exposed = Expose("root", [PortSpec(443)])
        rebuilt = cloudlet(vms=[Vm("game", "internal", image="game-v2", expose=exposed)])
        report = world.sync(rebuilt, FlakyDeletes(world.cloud, "vm/game", times=2))
        assert report.converged, report.message
        game = {s.phase: s.attempts for s in report.steps if s.id == "vm/game"}
        assert game == {"delete": 3, "create": 1}
        assert all(s.op == "replace" for s in report.steps if s.id == "vm/game")
        world.assert_converged_to(rebuilt)
    finally:
        world.close()
