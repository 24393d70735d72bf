"""The engine applies nothing outside an approval (issue 11), on the simulated cloud.

Before the fix ``Engine.sync`` took no approval at all: it re-observed and
applied whatever the fresh plan held, so drift that arrived between the
prompt and the answer was applied unseen.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from harness import World
from helpers import cloudlet

from cloudlet.engine.desired import DesiredMoved, Expected, store_desired
from cloudlet.engine.sync import QuietListener
from cloudlet.model.resources import Observed
from cloudlet.model.spec import Vm
from cloudlet.planner import Plan
from cloudlet.planner.binding import bind
from cloudlet.planner.saved import SavedPlan, observation_digest

SPEC = cloudlet(vms=[Vm("game", "internal", image="game-v1"), Vm("chat", "internal")])
NAME = SPEC.name


@pytest.fixture
def world() -> Iterator[World]:
    w = World()
    yield w
    w.close()


def snapshot(world: World) -> list[Observed]:
    return sorted(world.cloud.observe(NAME), key=lambda o: o.uid)


def converged_with_drift(world: World) -> None:
    """Converged, then the game VM's flavor changed out of band (one update)."""
    assert world.sync(SPEC).converged
    world.cloud.cloud.set_attr(NAME, "vm/game", "flavor", "m1.large")


def test_an_approved_plan_that_still_holds_is_applied(world: World) -> None:
    converged_with_drift(world)
    plan = world.engine().plan(SPEC)
    report = world.engine().sync(SPEC, approved=bind(plan))
    assert report.converged, report.message
    assert {(s.id, s.op) for s in report.steps} == {(a.id, a.op) for a in plan.actions}


def test_drift_since_the_approval_stops_the_sync_before_it_stores_or_applies(
    world: World,
) -> None:
    converged_with_drift(world)
    approved = bind(world.engine().plan(SPEC))
    world.cloud.cloud.remove(NAME, "vm/chat")  # arrives while the prompt waits
    before, revision = snapshot(world), world.repo.get_desired(NAME)
    report = world.engine().sync(SPEC, approved=approved)
    assert report.stopped == "changed" and not report.converged
    assert report.steps == []
    assert report.mismatch is not None
    assert [b.key for b in report.mismatch.added] == ["vm/chat"]
    assert report.unapproved is not None and not report.unapproved.empty
    assert snapshot(world) == before
    assert world.repo.get_desired(NAME) == revision


def test_the_check_is_made_again_under_the_lock(world: World) -> None:
    """Drift landing after ``sync``'s first check: the reconcile's round 1
    refuses too, and records no sync (nothing was done)."""
    converged_with_drift(world)
    approved = bind(world.engine().plan(SPEC))
    world.cloud.cloud.remove(NAME, "vm/chat")
    record = world.repo.get_sync(NAME)
    revision = store_desired(world.repo, SPEC, lock_timeout=5, at=0)
    before = snapshot(world)
    report = world.engine().reconcile(SPEC, revision, approved=approved)
    assert report.stopped == "changed" and report.steps == []
    assert snapshot(world) == before
    assert world.repo.get_sync(NAME) == record


class DriftDuringRound1(QuietListener):
    """Deletes an object nobody planned to touch once round 1 is under way."""

    def __init__(self, world: World, victim: str) -> None:
        self.world, self.victim, self.done = world, victim, False

    def plan_ready(self, plan: Plan, round_no: int) -> None:
        if not self.done:
            self.done = True
            self.world.cloud.cloud.remove(NAME, self.victim)


def test_a_later_round_applies_nothing_the_approval_does_not_cover(world: World) -> None:
    converged_with_drift(world)
    approved = bind(world.engine().plan(SPEC))
    engine = world.engine()
    engine.listener = DriftDuringRound1(world, "vm/chat")
    report = engine.sync(SPEC, approved=approved)
    assert report.stopped == "changed" and not report.converged
    assert {s.id for s in report.steps} == {"vm/game"}  # round 1: the approved action only
    assert "vm/chat" in report.message and "not approved" in report.message
    assert "vm/chat" not in {o.id for o in world.cloud.observe(NAME)}
    record = world.repo.get_sync(NAME)
    assert record is not None and record.outcome == "failed"


def test_without_an_approval_the_same_drift_is_healed(world: World) -> None:
    """The control: ``--yes`` and pipes apply the current plan, rounds and all."""
    converged_with_drift(world)
    engine = world.engine()
    engine.listener = DriftDuringRound1(world, "vm/chat")
    report = engine.sync(SPEC)
    assert report.converged and len(report.plans) == 2


def saved_now(world: World) -> SavedPlan:
    engine = world.engine()
    desired = world.repo.get_desired(NAME)
    actual = engine.observe(NAME)
    plan = engine.plan_against(SPEC, actual)
    revision = desired.revision if desired is not None else None
    return SavedPlan(SPEC, revision, observation_digest(actual), bind(plan))


def test_a_fresh_saved_plan_is_applied(world: World) -> None:
    converged_with_drift(world)
    saved = saved_now(world)
    report = world.engine().sync_saved(saved)
    assert report.converged
    assert {s.id for s in report.steps} == {b.id for b in saved.binding.actions.values()}


def test_a_saved_plan_whose_desired_revision_moved_is_refused(world: World) -> None:
    converged_with_drift(world)
    saved = saved_now(world)
    moved = store_desired(
        world.repo, cloudlet(data_path="router", vms=SPEC.spec.vms), lock_timeout=5, at=0
    )
    before = snapshot(world)
    report = world.engine().sync_saved(saved)
    assert report.stopped == "changed" and report.steps == []
    assert f"now {moved}" in report.message
    assert snapshot(world) == before
    record = world.repo.get_desired(NAME)
    assert record is not None and record.revision == moved


def test_storing_with_an_expected_revision_refuses_a_moved_one(world: World) -> None:
    with pytest.raises(DesiredMoved, match="was 7, now none"):
        store_desired(world.repo, SPEC, lock_timeout=5, at=0, expected=Expected(7))
    assert world.repo.get_desired(NAME) is None
    assert store_desired(world.repo, SPEC, lock_timeout=5, at=0, expected=Expected(None)) >= 1
