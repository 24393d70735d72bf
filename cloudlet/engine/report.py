"""What one reconcile did: its steps, plans and verdict, for the CLI and metrics."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import attrs

from cloudlet.model.resources import Observed
from cloudlet.planner import Plan
from cloudlet.planner.binding import Mismatch
from cloudlet.shepherd.status import Status
from cloudlet.store.records import SyncRecord

#: ``superseded``: the spec read was replaced before the reconcile began, so
#: nothing was done; ``lost``: the lock (or lease) went to another process
#: mid-way, so this one stopped; ``terminal``: no retry can fix it;
#: ``interrupted``: a signal (or the daemon's stop) ended it mid-way;
#: ``changed``: a fresh plan held what was not approved, so it was not applied.
Outcome = Literal["converged", "failed", "superseded", "lost", "terminal", "interrupted", "changed"]


@attrs.frozen
class StepOutcome:
    """One provider step as the summary reports it."""

    id: str
    op: str
    phase: str
    outcome: str
    started: float | None
    finished: float | None
    attempts: int
    error: str | None
    round: int
    #: The graph's step key (``phase:id``, ``phase:id@uid`` for one copy of several).
    step: str = ""


@attrs.define
class SyncReport:
    cloudlet: str
    converged: bool = False
    steps: list[StepOutcome] = attrs.field(factory=list)
    plans: list[Plan] = attrs.field(factory=list)
    wall: float = 0.0
    message: str = ""
    #: The desired revision this sync applied.
    revision: int | None = None
    #: The last observation, which the stored status is built from.
    actual: list[Observed] | None = None
    #: Why it did not converge, where that is more than "failed".
    stopped: Outcome | None = None
    #: What the engine recorded at the end (None when nothing was recorded).
    record: SyncRecord | None = None
    status: Status | None = None
    #: With ``stopped == "changed"``: how the fresh plan differs from the
    #: approved one, and that plan (to show, and to approve instead).
    mismatch: Mismatch | None = None
    unapproved: Plan | None = None

    @property
    def outcome(self) -> Outcome:
        if self.converged:
            return "converged"
        return self.stopped or "failed"

    @property
    def record_outcome(self) -> Literal["converged", "failed", "interrupted"]:
        """The sync record's outcome: a stop on request is no failure."""
        if self.converged:
            return "converged"
        return "interrupted" if self.stopped == "interrupted" else "failed"

    def to_json(self) -> dict[str, Any]:
        return {
            "cloudlet": self.cloudlet,
            "outcome": self.record_outcome,
            "message": self.message,
            "wallSeconds": round(self.wall, 4),
            "rounds": len(self.plans),
            "actions": [attrs.asdict(s) for s in self.steps],
        }


@attrs.frozen
class Tally:
    """What became of a sync's actions. Only ``failed`` failed: ``blocked``
    waited on one that failed, ``not_started`` on a stop (an interrupt)."""

    done: int = 0
    failed: int = 0
    blocked: int = 0
    not_started: int = 0
    #: Begun and cut off: a replacement whose delete ran and create did not.
    unfinished: int = 0

    def describe(self) -> str:
        """``20 actions done, 1 failed, 2 blocked by a failed dependency``:
        each count said for what it is, the zero ones left out."""
        parts = [f"{self.done} action{'s' * (self.done != 1)} done"]
        parts += [f"{self.failed} failed"] * bool(self.failed)
        parts += [f"{self.blocked} blocked by a failed dependency"] * bool(self.blocked)
        parts += [f"{self.unfinished} unfinished"] * bool(self.unfinished)
        parts += [f"{self.not_started} not started"] * bool(self.not_started)
        return ", ".join(parts)


def tally(steps: Iterable[StepOutcome]) -> Tally:
    """Count actions, not steps: a replacement's delete and create are one.
    An action failed if a step of it failed; else it is blocked if one was
    blocked; done if all succeeded; not started if none began."""
    actions: dict[tuple[int, str], list[str]] = {}
    for s in steps:
        action = s.step.partition(":")[2] if s.step else s.id
        actions.setdefault((s.round, action), []).append(s.outcome)
    counts = {"done": 0, "failed": 0, "blocked": 0, "not_started": 0, "unfinished": 0}
    for outcomes in actions.values():
        counts[_verdict(outcomes)] += 1
    return Tally(**counts)


def _verdict(outcomes: list[str]) -> str:
    if "failed" in outcomes:
        return "failed"
    if "blocked" in outcomes:
        return "blocked"
    if all(o == "ok" for o in outcomes):
        return "done"
    return "unfinished" if "ok" in outcomes else "not_started"
