"""What one reconcile did: its steps, plans and verdict, for the CLI and metrics."""

from __future__ import annotations

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

    def to_json(self) -> dict[str, Any]:
        return {
            "cloudlet": self.cloudlet,
            "outcome": "converged" if self.converged else "failed",
            "message": self.message,
            "wallSeconds": round(self.wall, 4),
            "rounds": len(self.plans),
            "actions": [attrs.asdict(s) for s in self.steps],
        }
