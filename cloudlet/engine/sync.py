"""Sync: store the desired state, then plan and apply until converged.

Level-triggered like a Kubernetes controller: each round re-reads the actual
state, plans against it and applies; the run ends when a fresh plan is empty
(converged) or a round leaves failures (failed). A per-cloudlet lock keeps
two runs of one cloudlet from interleaving.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from cloudlet.engine.apply import StepRunner
from cloudlet.engine.retry import RetryPolicy, call_with_retry
from cloudlet.engine.walk import NodeResult, WalkEvents, walk
from cloudlet.errors import ProviderError
from cloudlet.model.codec import unstructure
from cloudlet.model.expand import Expansion, expand
from cloudlet.model.resources import Observed, Resource
from cloudlet.model.spec import Cloudlet
from cloudlet.planner import Plan, Step, leave_alone, plan_actions, remaining_path
from cloudlet.providers.base import Provider
from cloudlet.shepherd.status import build_status
from cloudlet.store.records import StateRepo

log = logging.getLogger("cloudlet.engine")


@attrs.frozen
class SyncOptions:
    parallelism: int = 10
    max_rounds: int = 4
    lock_timeout: float = 60.0
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    seed: int | None = None


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

    def to_json(self) -> dict[str, Any]:
        return {
            "cloudlet": self.cloudlet,
            "outcome": "converged" if self.converged else "failed",
            "message": self.message,
            "wallSeconds": round(self.wall, 4),
            "rounds": len(self.plans),
            "actions": [
                {
                    "id": s.id,
                    "op": s.op,
                    "phase": s.phase,
                    "outcome": s.outcome,
                    "started": s.started,
                    "finished": s.finished,
                    "attempts": s.attempts,
                    "error": s.error,
                    "round": s.round,
                }
                for s in self.steps
            ],
        }


class SyncListener:
    """Progress hooks; the command line renders them, tests may record them."""

    def plan_ready(self, plan: Plan, round_no: int) -> None: ...
    def step_started(self, step: Step) -> None: ...
    def step_finished(self, step: Step, result: NodeResult) -> None: ...


@attrs.define
class Engine:
    """Sequences every effect of a sync; the only stateful layer."""

    repo: StateRepo
    provider: Provider
    options: SyncOptions = attrs.field(factory=SyncOptions)
    listener: SyncListener = attrs.field(factory=SyncListener)
    clock: Callable[[], float] = time.monotonic
    wallclock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    stop: threading.Event = attrs.field(factory=threading.Event)

    def expansion(self, cloudlet: Cloudlet) -> Expansion:
        return expand(cloudlet, self.repo.get_ports(cloudlet.name))

    def plan(self, cloudlet: Cloudlet) -> Plan:
        """What sync would do now; stores nothing."""
        resources = self.expansion(cloudlet).resources
        return self._plan(cloudlet.name, resources, self.observe(cloudlet.name))

    def _plan(self, name: str, desired: Sequence[Resource], actual: Sequence[Observed]) -> Plan:
        """The planner's plan, with the updates this cloud cannot make in place
        (its provider says why) planned again as replacements."""
        plan = plan_actions(name, desired, actual)
        forced = {}
        for action in plan.actions:
            want, have = action.change.desired, action.change.current
            if action.op == "update" and want is not None and have is not None:
                reason = call_with_retry(
                    functools.partial(self.provider.replacement_reason, want, have),
                    self.options.retry,
                    sleep=self.sleep,
                )
                if reason is not None:
                    forced[action.id] = reason
        return plan_actions(name, desired, actual, forced) if forced else plan

    def sync(
        self, cloudlet: Cloudlet, *, resync: bool = False, revision: int | None = None
    ) -> SyncReport:
        """Apply the spec. On a ``resync`` (nothing new in the spec, only a
        look for drift) resources under drift policy ``report`` are left
        alone, and so is whatever would have to wait for them.

        Without ``revision`` (``cloudlet sync FILE``) the spec is stored as the
        desired state first. With it (the daemon, which read the spec at that
        revision) nothing is stored, and nothing is done if the stored spec
        has moved on meanwhile: a reconcile must never put back a spec that
        an operator has since replaced.
        """
        name = cloudlet.name
        with self.repo.store.lock(f"sync-{name}", self.options.lock_timeout):
            if revision is None:
                revision = self.repo.put_desired(name, unstructure(cloudlet), at=self.wallclock())
            else:
                current = self.repo.get_desired(name)
                if current is None or current.revision != revision:
                    now = "deleted" if current is None else f"now {current.revision}"
                    message = f"desired revision {revision} was superseded ({now}); not applied"
                    return SyncReport(name, message=message, revision=revision)
            expansion = self.expansion(cloudlet)
            self.repo.put_ports(name, expansion.port_mappings)
            frozen = frozenset(r.id for r in expansion.resources if resync and r.policy == "report")
            return self._converge(name, expansion, expansion.resources, revision, frozen)

    def destroy(self, name: str) -> SyncReport:
        with self.repo.store.lock(f"sync-{name}", self.options.lock_timeout):
            empty = Expansion(name, (), ())
            report = self._converge(name, empty, ())
            if report.converged:
                self.repo.forget(name)
            return report

    def _converge(
        self,
        name: str,
        expansion: Expansion,
        desired: Sequence[Resource],
        revision: int | None = None,
        frozen: frozenset[str] = frozenset(),
    ) -> SyncReport:
        t0 = self.clock()
        report = SyncReport(name, revision=revision)
        self._recover_journal(name)
        try:
            self._rounds(name, desired, report, t0, frozen)
        except ProviderError as err:
            report.converged = False
            report.message = f"cannot observe the cloudlet: {err}"
        report.wall = self.clock() - t0
        if report.actual is not None:
            self._record(name, expansion, report.actual, report)
        return report

    def observe(self, name: str) -> list[Observed]:
        """One observation, retried like any provider call."""
        return call_with_retry(
            lambda: self.provider.observe(name), self.options.retry, sleep=self.sleep
        )

    def _rounds(
        self,
        name: str,
        desired: Sequence[Resource],
        report: SyncReport,
        t0: float,
        frozen: frozenset[str],
    ) -> None:
        """Observe, plan, apply; again until a fresh plan is empty."""
        for round_no in range(1, self.options.max_rounds + 2):
            report.actual = self.observe(name)
            plan = leave_alone(self._plan(name, desired, report.actual), frozen)
            if plan.empty:
                report.converged = True
                report.message = "converged" if round_no > 1 else "no changes"
                return
            if round_no > self.options.max_rounds:
                report.message = f"not converged after {self.options.max_rounds} rounds"
                return
            report.plans.append(plan)
            self.listener.plan_ready(plan, round_no)
            failed = self._apply(plan, report, round_no, t0)
            if failed or self.stop.is_set():
                report.message = f"{failed} actions failed" if failed else "interrupted"
                report.actual = self.observe(name)
                return

    def _apply(self, plan: Plan, report: SyncReport, round_no: int, t0: float) -> int:
        runner = StepRunner(
            name_of(plan),
            self.provider,
            self.repo,
            self.options.retry,
            self.sleep,
            self.wallclock,
            self.options.seed,
        )
        events = WalkEvents(
            started=lambda key: self.listener.step_started(plan.step(key)),
            finished=lambda res: self.listener.step_finished(plan.step(res.key), res),
        )
        offset = self.clock() - t0
        results = walk(
            plan.graph,
            lambda key: runner(plan.step(key)),
            parallelism=self.options.parallelism,
            priority=remaining_path(plan.graph, {}),
            events=events,
            clock=self.clock,
            stop=self.stop,
        )
        failed = 0
        for key, res in sorted(results.items()):
            step = plan.step(key)
            failed += res.outcome != "ok"
            report.steps.append(
                StepOutcome(
                    step.change.id,
                    step.change.op,
                    step.phase,
                    res.outcome,
                    _shift(res.started, offset),
                    _shift(res.finished, offset),
                    runner.attempts.get(step.key, 0),
                    res.error,
                    round_no,
                )
            )
        return failed

    def _recover_journal(self, name: str) -> None:
        pending = self.repo.journal_pending(name)
        if pending:
            log.warning(
                "%s: %d actions were in flight when a previous run stopped (%s); "
                "re-observing and adopting by tag",
                name,
                len(pending),
                ", ".join(sorted(p.action_id for p in pending)[:5]),
            )
            self.repo.journal_clear(name)

    def _record(
        self, name: str, expansion: Expansion, actual: Sequence[Observed], report: SyncReport
    ) -> None:
        at = self.wallclock()
        last = {
            "at": at,
            "outcome": "converged" if report.converged else "failed",
            "message": report.message,
            "wallSeconds": round(report.wall, 4),
            "revision": report.revision,
        }
        if not expansion.resources and report.converged:
            return
        self.repo.put_status(name, build_status(expansion, actual, at=at, last_sync=last))


def name_of(plan: Plan) -> str:
    return plan.cloudlet


def _shift(value: float | None, offset: float) -> float | None:
    return None if value is None else round(value + offset, 4)
