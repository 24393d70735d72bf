"""Reconcile: plan and apply a stored desired state until converged.

Level-triggered like a Kubernetes controller: each round re-reads the actual
state, plans against it and applies; the run ends when a fresh plan is empty
(converged), a round leaves failures (failed, unless a fresh observation
shows the cloud converged all the same) or a stop is asked for (interrupted:
the running calls finish, nothing new starts). A reconcile reads the
desired state and never writes it (``engine.desired`` does, for ``apply``,
``rollback`` and ``sync``). The per-cloudlet lock keeps two runs of one
cloudlet from interleaving; if the store takes the lock away (an etcd lease
that expired while the process was frozen) the run starts nothing more,
and its journal and status writes are fenced on the lock, so they fail
rather than land after someone else's.

Data flows one way: spec → expansion → plan → steps → ``SyncRecord`` (what
the daemon decides from) → ``Status`` (what operators read, never read
back to decide).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Literal, Protocol

import attrs

from cloudlet.engine.apply import StepRunner
from cloudlet.engine.desired import DesiredMoved, Expected, store_desired
from cloudlet.engine.report import StepOutcome, SyncReport, tally
from cloudlet.engine.retry import RetryPolicy, call_with_retry
from cloudlet.engine.walk import NodeResult, WalkEvents, walk
from cloudlet.errors import FencedOut, ProviderError, TerminalError
from cloudlet.model.expand import Expansion, expand
from cloudlet.model.resources import Observed, Resource
from cloudlet.model.spec import Cloudlet
from cloudlet.planner import (
    DESTROYED,
    UNWANTED,
    Plan,
    Step,
    leave_alone,
    plan_actions,
    remaining_path,
)
from cloudlet.planner.binding import Binding, Mismatch, bind, mismatch, uncovered
from cloudlet.planner.saved import SavedPlan
from cloudlet.providers.base import Provider
from cloudlet.shepherd.codec import status_from_json, status_to_json
from cloudlet.shepherd.metrics import reaches_public_addresses
from cloudlet.shepherd.probe import probed
from cloudlet.shepherd.status import Status, build_status, with_sync
from cloudlet.store.base import HeldLock
from cloudlet.store.records import ObservedRecord, StateRepo, SyncRecord, cloudlet_lock

log = logging.getLogger("cloudlet.engine")

#: ``all``: an operator's explicit sync heals everything. ``per-policy``: the
#: daemon's; a pass over a revision that already converged is a drift check,
#: leaving resources under drift policy ``report`` alone.
Heal = Literal["all", "per-policy"]


@attrs.frozen
class SyncOptions:
    parallelism: int = 10
    max_rounds: int = 4
    lock_timeout: float = 60.0
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    seed: int | None = None


class SyncListener(Protocol):
    """Progress hooks; the command line renders them, tests may record them."""

    def plan_ready(self, plan: Plan, round_no: int) -> None: ...
    def step_started(self, step: Step) -> None: ...
    def step_finished(self, step: Step, result: NodeResult) -> None: ...
    def close(self) -> None: ...


class QuietListener:
    """Hears nothing: for ``--json``, the daemon and tests."""

    def plan_ready(self, plan: Plan, round_no: int) -> None:
        return None

    def step_started(self, step: Step) -> None:
        return None

    def step_finished(self, step: Step, result: NodeResult) -> None:
        return None

    def close(self) -> None:
        return None


@attrs.define
class Engine:
    """Sequences every effect of a reconcile; the only stateful layer."""

    repo: StateRepo
    provider: Provider
    options: SyncOptions = attrs.field(factory=SyncOptions)
    listener: SyncListener = attrs.field(factory=QuietListener)
    clock: Callable[[], float] = time.monotonic
    wallclock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    stop: threading.Event = attrs.field(factory=threading.Event)

    def expansion(self, cloudlet: Cloudlet) -> Expansion:
        return expand(cloudlet, self.repo.get_ports(cloudlet.name))

    def plan(self, cloudlet: Cloudlet) -> Plan:
        """What a reconcile would do now; stores nothing."""
        resources = self.expansion(cloudlet).resources
        return self._plan(cloudlet.name, resources, self.observe(cloudlet.name))

    def plan_against(self, cloudlet: Cloudlet, actual: Sequence[Observed]) -> Plan:
        """The plan from an observation already made (a saved plan keeps its digest)."""
        return self._plan(cloudlet.name, self.expansion(cloudlet).resources, actual)

    def observe(self, name: str) -> list[Observed]:
        """One observation, retried like any provider call."""
        return call_with_retry(
            lambda: self.provider.observe(name), self.options.retry, sleep=self.sleep
        )

    def _plan(
        self,
        name: str,
        desired: Sequence[Resource],
        actual: Sequence[Observed],
        unwanted: str = UNWANTED,
    ) -> Plan:
        """The planner's plan, with the updates this cloud cannot make in place
        (its provider says why) planned again as replacements; ``unwanted``
        is what a delete of an object the spec does not hold says."""
        plan = plan_actions(name, desired, actual, unwanted=unwanted)
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
        return plan_actions(name, desired, actual, forced, unwanted=unwanted) if forced else plan

    def sync(
        self,
        cloudlet: Cloudlet,
        *,
        approved: Binding | None = None,
        expected: Expected | None = None,
    ) -> SyncReport:
        """``cloudlet sync FILE``: store the spec, then reconcile it in full.

        With ``approved`` (what the operator was shown and said yes to) the
        spec is stored only if a fresh plan still matches it, and the
        reconcile applies nothing outside it (see ``_Run._within``); with
        ``expected``, only if the stored desired revision is still that one.
        """
        at = self.wallclock()
        if approved is not None:
            refusal = self._refusal(cloudlet, approved, expected)
            if refusal is not None:
                return refusal
        lock_timeout = self.options.lock_timeout
        try:
            revision = store_desired(
                self.repo, cloudlet, lock_timeout=lock_timeout, at=at, expected=expected
            )
        except DesiredMoved as err:
            return _refused(cloudlet.name, f"{err}; nothing applied", expected)
        return self.reconcile(cloudlet, revision, approved=approved)

    def sync_saved(self, saved: SavedPlan) -> SyncReport:
        """``cloudlet sync --plan PLAN``: exactly the saved plan, or nothing
        if the desired revision or the plan it yields now has moved."""
        expected = Expected(saved.desired_revision)
        return self.sync(saved.cloudlet, approved=saved.binding, expected=expected)

    def _refusal(
        self, cloudlet: Cloudlet, approved: Binding, expected: Expected | None
    ) -> SyncReport | None:
        """A report refusing the sync before anything is stored, or None: the
        same checks the reconcile makes under the lock, made first so that
        a refused approval does not even store the spec."""
        name = cloudlet.name
        if expected is not None:
            current = self.repo.get_desired(name)
            now = current.revision if current is not None else None
            if now != expected.revision:
                err = DesiredMoved(name, expected.revision, now)
                return _refused(name, f"{err}; nothing applied", expected)
        fresh = self.plan(cloudlet)
        if fresh.empty:
            return None
        diff = mismatch(approved, bind(fresh))
        if not diff:
            return None
        report = _refused(name, _CHANGED, expected)
        report.mismatch, report.unapproved = diff, fresh
        return report

    def reconcile(
        self,
        cloudlet: Cloudlet,
        revision: int,
        *,
        heal: Heal = "all",
        approved: Binding | None = None,
    ) -> SyncReport:
        """Make the cloudlet match ``cloudlet``, the desired state stored at
        ``revision``; nothing is done if the stored spec has moved on since
        it was read (a reconcile must never act on a spec an operator has
        since replaced). With ``heal="per-policy"`` a revision whose last
        reconcile converged is only checked for drift, and resources under
        drift policy ``report`` are left alone (with whatever waits on them).
        With ``approved``, nothing outside that binding is applied.
        """
        name = cloudlet.name
        with cloudlet_lock(self.repo.store, name, self.options.lock_timeout) as held:
            run = _Run.of(self, name, held)
            current = self.repo.get_desired(name)
            if current is None or current.revision != revision:
                now = "deleted" if current is None else f"now {current.revision}"
                message = f"desired revision {revision} was superseded ({now}); not applied"
                return SyncReport(name, message=message, revision=revision, stopped="superseded")
            last = run.repo.get_sync(name)
            drift_only = heal == "per-policy" and last is not None and last.revision == revision
            drift_only = drift_only and last is not None and last.converged
            expansion = self.expansion(cloudlet)
            run.repo.put_ports(name, expansion.port_mappings)
            frozen = frozenset(
                r.id for r in expansion.resources if drift_only and r.policy == "report"
            )
            return run.converge(expansion, revision, frozen, approved)

    def destroy(self, name: str) -> SyncReport:
        """Delete everything the cloudlet owns, then forget its desired state."""
        with cloudlet_lock(self.repo.store, name, self.options.lock_timeout) as held:
            run = _Run.of(self, name, held, unwanted=DESTROYED)
            report = run.converge(Expansion(name, (), ()), None)
            if report.converged:
                self.repo.forget(name)
            return report


@attrs.define
class _Run:
    """One reconcile of one cloudlet under its lock: the engine's effects,
    with writes fenced on the lock and a stop that the lock's loss sets."""

    engine: Engine
    name: str
    repo: StateRepo
    stop: threading.Event
    #: What each delete of an object the spec does not hold says in the plan.
    unwanted: str = UNWANTED

    @classmethod
    def of(cls, engine: Engine, name: str, held: HeldLock, unwanted: str = UNWANTED) -> _Run:
        repo = engine.repo if held.fence is None else engine.repo.also_fenced(held.fence)
        return cls(engine, name, repo, _either(engine.stop, held.lost), unwanted)

    def converge(
        self,
        expansion: Expansion,
        revision: int | None,
        frozen: frozenset[str] = frozenset(),
        approved: Binding | None = None,
    ) -> SyncReport:
        engine = self.engine
        t0 = engine.clock()
        report = SyncReport(self.name, revision=revision)
        try:
            self._recover_journal()
            self._rounds(expansion.resources, report, t0, frozen, approved)
        except ProviderError as err:
            report.converged = False
            report.message = f"cannot observe the cloudlet: {err}"
        except TerminalError as err:
            report.converged, report.stopped = False, "terminal"
            report.message = str(err)
        except FencedOut as err:
            return self._lost(report, err, t0)
        report.wall = engine.clock() - t0
        if report.stopped == "changed" and not report.steps:
            return report  # refused before acting: no sync to record
        if self._lock_lost():
            return self._lost(report, None, t0)
        try:
            self._record(expansion, report)
        except FencedOut as err:
            return self._lost(report, err, t0)
        return report

    def _lock_lost(self) -> bool:
        return self.stop.is_set() and not self.engine.stop.is_set()

    def _lost(self, report: SyncReport, err: FencedOut | None, t0: float) -> SyncReport:
        """Another process holds the cloudlet now: record nothing, stop."""
        report.converged, report.stopped = False, "lost"
        report.wall = self.engine.clock() - t0
        why = f": {err}" if err is not None else ""
        report.message = f"lost the cloudlet's lock mid-way; stopped{why}"
        log.debug("%s: %s", self.name, report.message)  # the report's message tells it
        return report

    def _rounds(
        self,
        desired: Sequence[Resource],
        report: SyncReport,
        t0: float,
        frozen: frozenset[str],
        approved: Binding | None = None,
    ) -> None:
        """Observe, plan, apply; again until a fresh plan is empty (or, when
        bound to an approval, until a plan holds what was not approved)."""
        engine = self.engine
        for round_no in range(1, engine.options.max_rounds + 2):
            report.actual = engine.observe(self.name)
            plan = engine._plan(self.name, desired, report.actual, self.unwanted)
            plan = leave_alone(plan, frozen)
            if plan.empty:
                report.converged = True
                report.message = "converged" if round_no > 1 else "no changes"
                return
            if approved is not None and not self._within(approved, plan, round_no, report):
                return
            if round_no > engine.options.max_rounds:
                report.message = f"not converged after {engine.options.max_rounds} rounds"
                return
            report.plans.append(plan)
            engine.listener.plan_ready(plan, round_no)
            failed = self._apply(plan, report, round_no, t0)
            if self.stop.is_set() and _cut_short(report, round_no):
                report.stopped = "interrupted"
                report.message = tally(report.steps).describe()
                report.actual = engine.observe(self.name)
                return
            if failed:
                self._settle(desired, report, frozen)
                return

    def _settle(
        self, desired: Sequence[Resource], report: SyncReport, frozen: frozenset[str]
    ) -> None:
        """After a round with failures: converged after all if a fresh plan is
        empty (a call that failed once the cloud had committed its work)."""
        engine = self.engine
        report.actual = engine.observe(self.name)
        said = tally(report.steps).describe()
        if leave_alone(
            engine._plan(self.name, desired, report.actual, self.unwanted), frozen
        ).empty:
            report.converged = True
            report.message = f"converged; the cloud matches though calls failed ({said})"
        else:
            report.message = said

    def _within(self, approved: Binding, plan: Plan, round_no: int, report: SyncReport) -> bool:
        """Whether ``plan`` is what was approved. Round 1 must be exactly
        the approved plan; a later round (finishing or retrying approved
        work) may hold only actions the approval covers. If not, nothing of
        this round is applied and the report says what differs."""
        fresh = bind(plan)
        if round_no == 1:
            diff = mismatch(approved, fresh)
            report.message = _CHANGED
        else:
            diff = Mismatch(added=uncovered(approved, fresh))
            report.message = (
                f"round {round_no} would do what was not approved: {diff.summary()}; stopped"
            )
        if not diff:
            report.message = ""
            return True
        report.stopped, report.mismatch, report.unapproved = "changed", diff, plan
        return False

    def _apply(self, plan: Plan, report: SyncReport, round_no: int, t0: float) -> int:
        engine = self.engine
        runner = StepRunner(
            plan.cloudlet,
            engine.provider,
            self.repo,
            engine.options.retry,
            engine.sleep,
            engine.wallclock,
            engine.options.seed,
        )
        events = WalkEvents(
            started=lambda key: engine.listener.step_started(plan.step(key)),
            finished=lambda res: engine.listener.step_finished(plan.step(res.key), res),
        )
        offset = engine.clock() - t0
        results = walk(
            plan.graph,
            lambda key: runner(plan.step(key)),
            parallelism=engine.options.parallelism,
            priority=remaining_path(plan.graph, {}),
            events=events,
            clock=engine.clock,
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
                    step.key,
                )
            )
        return failed

    def _recover_journal(self) -> None:
        pending = self.repo.journal_pending(self.name)
        if pending:
            log.warning(
                "%s: %d action%s in flight when a previous run stopped (%s); "
                "re-observing and adopting by tag",
                self.name,
                len(pending),
                " was" if len(pending) == 1 else "s were",
                ", ".join(sorted(p.step for p in pending)[:5]),
            )
            self.repo.journal_clear(self.name)

    def _record(self, expansion: Expansion, report: SyncReport) -> None:
        """The sync record first (what the daemon decides from), then the
        status built from the same observation (what operators read)."""
        if not expansion.resources and report.converged:
            return  # a finished destroy: the cloudlet is forgotten next
        at = self.engine.wallclock()
        record = SyncRecord(
            report.revision,
            report.record_outcome,
            report.message,
            at,
            round(report.wall, 4),
            terminal=report.stopped == "terminal",
        )
        self.repo.put_sync(self.name, record)
        previous = stored_status(self.repo, self.name)
        if report.actual is not None:
            observed = ObservedRecord(tuple(report.actual), at, report.revision)
            self.repo.put_observed(self.name, observed)  # for plan --offline only
            status = build_status(
                expansion, report.actual, at=at, last_sync=record, previous=previous
            )
            if reaches_public_addresses(self.engine.provider):
                status = probed(status, previous, at)
        elif previous is not None:
            status = with_sync(previous, record, at)
        else:
            report.record = record
            return  # nothing observed, nothing shown before: no status to show
        self.repo.put_status(self.name, status_to_json(status))
        report.record, report.status = record, status


_CHANGED = "the plan changed since it was approved; nothing applied"


def _refused(name: str, message: str, expected: Expected | None) -> SyncReport:
    revision = expected.revision if expected is not None else None
    return SyncReport(name, message=message, revision=revision, stopped="changed")


def record_terminal(
    repo: StateRepo, name: str, revision: int, message: str, *, at: float, lock_timeout: float
) -> bool:
    """Record that the stored spec at ``revision`` cannot be reconciled (it
    no longer passes validation): a failed, terminal sync record and the
    status's conditions to match. Under the cloudlet's lock, and only while
    ``revision`` is still the desired one; returns whether it recorded."""
    with cloudlet_lock(repo.store, name, lock_timeout):
        current = repo.get_desired(name)
        if current is None or current.revision != revision:
            return False
        record = SyncRecord(revision, "failed", message, at, terminal=True)
        repo.put_sync(name, record)
        previous = stored_status(repo, name)
        if previous is not None:
            repo.put_status(name, status_to_json(with_sync(previous, record, at)))
        return True


def stored_status(repo: StateRepo, name: str) -> Status | None:
    """The stored status, for continuity only (its conditions' transition
    times); one in a shape this version cannot read counts as none."""
    data = repo.get_status(name)
    if data is None:
        return None
    try:
        return status_from_json(data)
    except Exception:  # an older or hand-edited document: start afresh
        return None


def _either(a: threading.Event, b: threading.Event) -> threading.Event:
    """An event set once either ``a`` or ``b`` is (checked by whoever waits on it)."""
    return _EitherEvent(a, b)


class _EitherEvent(threading.Event):
    def __init__(self, a: threading.Event, b: threading.Event) -> None:
        super().__init__()
        self._a, self._b = a, b

    def is_set(self) -> bool:
        return self._a.is_set() or self._b.is_set() or super().is_set()


def _cut_short(report: SyncReport, round_no: int) -> bool:
    """Whether a stop left steps of this round unstarted (a stop that came
    as the last steps ran interrupts nothing: the next round sees)."""
    return any(s.outcome == "cancelled" for s in report.steps if s.round == round_no)


def _shift(value: float | None, offset: float) -> float | None:
    return None if value is None else round(value + offset, 4)
