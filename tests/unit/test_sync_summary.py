"""What a sync says it did: failed, blocked and not started are each said for
what they are; a stop on request is "interrupted", not a failure; a round
whose failed call had taken effect ends converged; and the signal guard of
``sync``/``destroy`` sets the stop and hands the old handlers back.

Issue 11: SIGTERM mid-sync was recorded as "71 blocked" and Degraded
SyncFailed; "3 failed" was said for 1 failed and 2 blocked.
"""

from __future__ import annotations

import io
import os
import signal
import threading
from collections.abc import Iterator

import pytest
from harness import World
from helpers import cloudlet
from rich.console import Console

from cloudlet.cmd.interrupts import Interrupted, caught, interrupted_line
from cloudlet.cmd.render import print_sync
from cloudlet.engine.report import StepOutcome, SyncReport, Tally, tally
from cloudlet.errors import ProviderError
from cloudlet.model.resources import Observed, Resource
from cloudlet.providers.fake import FakeProvider
from cloudlet.shepherd.status import conditions
from cloudlet.store.records import SyncRecord


def step(
    rid: str, outcome: str, *, op: str = "create", phase: str = "", rnd: int = 1
) -> StepOutcome:
    phase = phase or op
    return StepOutcome(rid, op, phase, outcome, None, None, 1, None, rnd, f"{phase}:{rid}")


# -- counting (pure) ----------------------------------------------------------------


def test_one_failed_and_two_blocked_are_said_as_such_not_as_three_failed() -> None:
    steps = [step("a", "ok"), step("b", "failed"), step("c", "blocked"), step("d", "blocked")]
    counts = tally(steps)
    assert counts == Tally(done=1, failed=1, blocked=2)
    assert counts.describe() == "1 action done, 1 failed, 2 blocked by a failed dependency"


def test_steps_a_stop_left_unstarted_are_not_started_not_failed() -> None:
    counts = tally([step(f"r{i}", "cancelled") for i in range(186)])
    assert counts == Tally(not_started=186)
    assert counts.describe() == "0 actions done, 186 not started"


def test_a_replacement_is_one_action_whose_halves_decide_it() -> None:
    whole = [step("vm/x", "ok", op="replace", phase=p) for p in ("delete", "create")]
    half = [
        step("vm/y", "ok", op="replace", phase="delete"),
        step("vm/y", "cancelled", op="replace", phase="create"),
    ]
    broken = [
        step("vm/z", "ok", op="replace", phase="delete"),
        step("vm/z", "failed", op="replace", phase="create"),
    ]
    assert tally(whole + half + broken) == Tally(done=1, unfinished=1, failed=1)


def test_the_same_id_in_two_rounds_is_two_actions() -> None:
    assert tally([step("a", "failed", rnd=1), step("a", "ok", rnd=2)]) == Tally(done=1, failed=1)


def test_the_interrupted_line_says_how_far_and_what_finishes() -> None:
    report = SyncReport("c", steps=[step("a", "ok"), step("b", "cancelled")])
    line = interrupted_line([report], "cloudlet sync c.yaml")
    assert line == "interrupted: 1 action done, 1 not started; run `cloudlet sync c.yaml` to finish"


# -- how a report reads -------------------------------------------------------------


def printed(report: SyncReport) -> str:
    buf = io.StringIO()
    print_sync(Console(file=buf, width=200, color_system=None), report)
    return buf.getvalue()


def test_an_interrupted_report_reads_interrupted_and_lists_nothing_as_blocked() -> None:
    steps = [step("a", "ok"), *(step(f"r{i}", "cancelled") for i in range(5))]
    report = SyncReport("c", steps=steps, stopped="interrupted", message=tally(steps).describe())
    text = printed(report)
    assert "c: interrupted in" in text and "5 not started" in text, text
    assert "FAILED" not in text and "blocked" not in text and "failed" not in text, text
    assert report.to_json()["outcome"] == "interrupted"
    assert report.record_outcome == "interrupted"


def test_a_failed_report_lists_failures_and_what_they_blocked_apart() -> None:
    steps = [step("b", "failed"), step("c", "blocked"), step("d", "blocked")]
    text = printed(SyncReport("c", steps=steps, message=tally(steps).describe()))
    assert "FAILED" in text and "1 failed, 2 blocked by a failed dependency" in text, text
    assert "2 blocked by failures: c, d" in text and "3 failed" not in text, text


# -- status conditions ---------------------------------------------------------------


def test_an_interrupted_sync_is_not_synced_and_not_degraded() -> None:
    record = SyncRecord(3, "interrupted", "2 actions done, 23 not started", 1.0, 1.8)
    got = {c.type: c for c in conditions(["vm/a"], record, 5.0, None)}
    assert got["Synced"].status == "False" and got["Synced"].reason == "Interrupted"
    assert got["Degraded"].status == "False" and got["Degraded"].reason == "Interrupted"
    assert got["Ready"].status == "False"  # it still differs from its spec


# -- the engine ------------------------------------------------------------------------


@pytest.fixture
def world() -> Iterator[World]:
    w = World()
    yield w
    w.close()


class Forwarding:
    def __init__(self, inner: FakeProvider) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


class FailsAfterCommit(Forwarding):
    """Creates ``rid`` every time it is asked, then says it failed (a reply
    lost after the cloud committed): every retry of the step fails."""

    def __init__(self, inner: FakeProvider, rid: str) -> None:
        super().__init__(inner)
        self.rid = rid

    def create(self, owner: str, resource: Resource) -> Observed:
        made = self.inner.create(owner, resource)
        if resource.id == self.rid:
            raise ProviderError("reply lost after the create committed")
        return made


def test_a_failed_round_whose_work_took_effect_ends_converged(world: World) -> None:
    """The step has no dependents (a listener), so only its own reply was lost."""
    spec = cloudlet(clusters=[])
    leaf = "lb-listener/root.game.tcp.443"
    report = world.sync(spec, FailsAfterCommit(world.cloud, leaf))
    assert report.converged, report.message
    assert [s.id for s in report.steps if s.outcome == "failed"] == [leaf]
    assert "1 failed" in report.message and report.record_outcome == "converged"
    record = world.repo.get_sync(spec.name)
    assert record is not None and record.outcome == "converged"
    world.assert_converged_to(spec)


class StopsMidway(Forwarding):
    """Sets ``stop`` during its ``after``-th create (a signal arriving while
    calls run); that call still finishes."""

    def __init__(self, inner: FakeProvider, stop: threading.Event, after: int) -> None:
        super().__init__(inner)
        self.stop, self.after, self.calls = stop, after, 0

    def create(self, owner: str, resource: Resource) -> Observed:
        self.calls += 1
        if self.calls == self.after:
            self.stop.set()
        return self.inner.create(owner, resource)


def test_a_stop_mid_sync_is_recorded_interrupted_not_failed(world: World) -> None:
    spec = cloudlet(clusters=[])
    engine = world.engine(parallelism=1)
    engine.provider = StopsMidway(world.cloud, engine.stop, after=3)  # type: ignore[assignment]
    report = engine.sync(spec)
    assert not report.converged and report.stopped == "interrupted"
    counts = tally(report.steps)
    assert counts.done == 3 and counts.failed == 0 and counts.blocked == 0
    assert counts.not_started > 0
    assert "failed" not in report.message and "not started" in report.message, report.message
    record = world.repo.get_sync(spec.name)
    assert record is not None and record.outcome == "interrupted", record
    assert report.status is not None
    degraded = report.status.condition("Degraded")
    assert degraded is not None and degraded.status == "False" and degraded.reason != "SyncFailed"
    assert world.repo.journal_pending(spec.name) == []  # the running call finished and said so
    world.sync(spec)  # the next sync finishes the job
    world.assert_converged_to(spec)


# -- the signal guard -----------------------------------------------------------------


def test_the_first_signal_sets_the_armed_stop_and_the_old_handlers_come_back() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    stop, closed = threading.Event(), []
    with caught() as guard:
        assert guard.arm(stop, lambda: closed.append(True))
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)  # the handler ran; the process lives on
        assert guard.code == 143
        assert not guard.arm(threading.Event())  # a signal came: start nothing more
    assert closed == [True]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert guard.conclude([], "cloudlet sync x", ok=True) == 143


def test_a_signal_before_anything_runs_ends_the_command_with_its_code() -> None:
    with pytest.raises(Interrupted) as err, caught():
        os.kill(os.getpid(), signal.SIGINT)
        threading.Event().wait(5)  # interrupted by the handler's exception
    assert err.value.code == 130
    with caught() as guard:
        assert guard.conclude([], "x", ok=False) == 1 and guard.code is None
