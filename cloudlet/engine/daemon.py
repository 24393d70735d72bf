"""``cloudlet reconcile``: keep every stored cloudlet converged, forever.

Level-triggered, like a Kubernetes controller: a watcher notices desired
specs whose revision changed and queues their names; workers take a name,
re-read the desired spec and the actual state, and sync. Every success
schedules the next periodic resync (jittered, so a thousand cloudlets do not
resync in one burst), which is what heals drift made behind our back; every
failure is retried with exponential backoff. The daemon dials out only (to
its store and the orchestrators); the one port it may open is for metrics.

It says what it did, and nothing while it does: a ``LoggedListener`` hears
each step the engine finishes and logs one line per action (what, why,
outcome, duration), and each reconcile ends in one summary line; a failure
is told there once, with its retry delay. Every line carries its facts as
fields of the record too (``extra=``), for ``--log-format json``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

import attrs

from cloudlet.engine.queue import WorkQueue
from cloudlet.engine.report import SyncReport
from cloudlet.engine.sync import Engine, SyncOptions, record_terminal
from cloudlet.engine.walk import NodeResult
from cloudlet.errors import CloudletError, SpecError, WatchCompacted
from cloudlet.model.codec import structure
from cloudlet.model.spec import Cloudlet
from cloudlet.planner import Plan, Step
from cloudlet.providers.base import Provider
from cloudlet.shepherd.metrics import InstrumentedProvider, Metrics
from cloudlet.store.base import Watchable
from cloudlet.store.ownership import Ownership
from cloudlet.store.records import DESIRED, StateRepo, SyncRecord

log = logging.getLogger("cloudlet.daemon")

_DONE = {"create": "created", "update": "updated", "delete": "deleted"}


def reason_for(revision: int, last: SyncRecord | None) -> str:
    """Why a reconcile acts: a revision not yet converged, or drift found on
    one that had (what the periodic resync is for)."""
    if last is None or last.revision != revision:
        return f"new revision {revision}"
    return "healed drift" if last.converged else f"retry of revision {revision}"


@attrs.define
class LoggedListener:
    """A ``SyncListener`` that logs each action the engine finishes, in one
    line with its facts as fields: the daemon's account of what it did."""

    cloudlet: str
    revision: int | None
    reason: str
    logger: logging.Logger = log

    def plan_ready(self, plan: Plan, round_no: int) -> None:
        self.logger.debug(
            "cloudlet %s: round %d, %d steps (%s)",
            self.cloudlet,
            round_no,
            plan.graph.number_of_nodes(),
            self.reason,
            extra={"cloudlet": self.cloudlet, "revision": self.revision, "round": round_no},
        )

    def step_started(self, step: Step) -> None:
        return None

    def step_finished(self, step: Step, result: NodeResult) -> None:
        took = round((result.finished or 0.0) - (result.started or 0.0), 3)
        fields = {
            "cloudlet": self.cloudlet,
            "id": step.change.id,
            "op": step.phase,
            "outcome": result.outcome,
            "duration": took,
            "revision": self.revision,
            "reason": self.reason,
        }
        if result.outcome == "ok":
            self.logger.info(
                "cloudlet %s: %s %s (%s) in %.2f s",
                self.cloudlet,
                _DONE.get(step.phase, step.phase),
                step.change.id,
                self.reason,
                took,
                extra=fields,
            )
        else:
            self.logger.warning(
                "cloudlet %s: failed to %s %s (%s) after %.2f s: %s",
                self.cloudlet,
                step.phase,
                step.change.id,
                self.reason,
                took,
                result.error,
                extra={**fields, "error": result.error},
            )

    def close(self) -> None:
        return None


def _level(report: SyncReport) -> int:
    """INFO for every reconcile (a drift check that found nothing is one line
    too: the issue asks for one per reconcile, and it shows the daemon is
    alive); DEBUG only for an instant requeue of a superseded revision,
    which did nothing; loud for failures."""
    outcome = report.outcome
    if outcome == "superseded":
        return logging.DEBUG
    if outcome in ("failed", "lost"):
        return logging.WARNING
    return logging.ERROR if outcome == "terminal" else logging.INFO


def log_reconcile(
    name: str, report: SyncReport, reason: str, wall: float, retry_in: float | None
) -> None:
    """The one line a reconcile ends in; a failure's only summary, with its retry."""
    ok = sum(1 for s in report.steps if s.outcome == "ok")
    failed = sum(1 for s in report.steps if s.outcome == "failed")
    outcome = report.outcome
    fields = {
        "cloudlet": name,
        "revision": report.revision,
        "outcome": outcome,
        "actions": ok + failed,
        "failed": failed,
        "duration": round(wall, 3),
        "reason": reason,
        "detail": report.message,
    }
    if retry_in is not None:
        fields["retry_in"] = round(retry_in, 3)
    actions = f"{ok} ok, {failed} failed" if failed else f"{ok} action{'s' if ok != 1 else ''}"
    said = report.message not in ("", "converged", "no changes", outcome)
    detail = f": {report.message}" if said else ""
    retry = f"; retrying in {retry_in:.1f} s" if retry_in is not None else ""
    log.log(
        _level(report),
        "cloudlet %s: revision %s %s (%s): %s in %.2f s%s%s",
        name,
        report.revision if report.revision is not None else "?",
        outcome,
        reason,
        actions,
        wall,
        detail,
        retry,
        extra=fields,
    )


@attrs.frozen
class DaemonOptions:
    resync: float = 60.0
    jitter: float = 0.1
    workers: int = 4
    poll: float = 0.1
    parallelism: int = 10
    lock_timeout: float = 60.0
    lease_ttl: float = 10.0


@attrs.define
class Daemon:
    repo: StateRepo
    provider_for: Callable[[Cloudlet], Provider]
    metrics: Metrics
    options: DaemonOptions = attrs.field(factory=DaemonOptions)
    stop: threading.Event = attrs.field(factory=threading.Event)
    queue: WorkQueue = attrs.field(factory=WorkQueue)
    rng: random.Random = attrs.field(factory=random.Random)
    ownership: Ownership | None = None
    _seen: dict[str, int] = attrs.field(factory=dict)
    #: Set by the store's watch on a desired-state change: look now, not at the next poll.
    _poke: threading.Event = attrs.field(factory=threading.Event)
    #: Why a loop thread died, if one did; the daemon then stops and exits non-zero.
    failure: str | None = None
    clock: Callable[[], float] = time.monotonic
    #: When the store was last read, and why the last read failed (for ``/readyz``).
    _store_read: float | None = None
    _store_error: str | None = None
    #: When the leases and heartbeat were last renewed in full.
    _renewed: float | None = None

    def __attrs_post_init__(self) -> None:
        if self.ownership is not None:
            self.repo = self.repo.fenced(self.ownership.fence, actor=self.ownership.replica)
        self.metrics.queue_depth.set_function(self.queue.waiting)

    def readiness(self) -> str | None:
        """Why this replica cannot do its work now, or None when it can: its
        store answers and, with replicas, its heartbeat and leases are current."""
        now = self.clock()
        if self.failure is not None:
            return f"stopping: {self.failure}"
        if self._store_error is not None:
            return f"store unreachable: {self._store_error}"
        if self._store_read is None:
            return "store not read yet"
        stale = max(10.0, 3 * self.options.poll)
        if now - self._store_read > stale:
            return f"store not read for {now - self._store_read:.0f} s"
        if self.ownership is None:
            return None
        if self._renewed is None:
            return "ownership lease not taken yet"
        if now - self._renewed > self.options.lease_ttl:
            return f"ownership lease not renewed for {now - self._renewed:.0f} s"
        return None

    def run(self) -> None:
        """Until ``stop`` is set; in-flight syncs finish their running steps."""
        loops: list[tuple[str, Callable[[], None]]] = [("watch", self._watch)]
        if isinstance(self.repo.store, Watchable):
            loops.append(("stream", self._stream))
        if self.ownership is not None:
            loops.append(("lease", self._membership))
        loops += [(f"worker-{i}", self._work) for i in range(max(1, self.options.workers))]
        threads = [
            threading.Thread(target=self._supervised, args=loop, name=loop[0], daemon=True)
            for loop in loops
        ]
        for t in threads:
            t.start()
        self.stop.wait()
        self.queue.close()
        for t in threads:
            t.join()
        if self.ownership is not None:
            self.ownership.leave()

    def _supervised(self, name: str, loop: Callable[[], None]) -> None:
        """Run one loop; if it dies, stop the whole daemon rather than limp on.

        A replica without its lease thread or its watcher would hold cloudlets
        it no longer serves; exiting non-zero lets its supervisor restart it
        and the other replicas take its cloudlets meanwhile.
        """
        try:
            loop()
        except Exception as err:
            self.failure = f"{name}: {type(err).__name__}: {err}"
            log.error(
                "internal error in the %s loop (%s); stopping",
                name,
                self.failure,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            self.stop.set()

    def _membership(self) -> None:
        """Keep leases and take or hand back cloudlets so that each replica
        owns its rendezvous share. Renewals (writes) go a third of the TTL
        apart; the look for expired leases (reads) runs every second, so a
        dead replica's cloudlets move within about TTL + 1 s, not TTL + TTL/3."""
        assert self.ownership is not None
        renew_every = self.options.lease_ttl / 3
        next_renewal = 0.0
        while not self.stop.is_set():
            if time.monotonic() >= next_renewal:
                next_renewal = time.monotonic() + renew_every
                self._renew()
            self._rebalance()
            self.stop.wait(min(renew_every, 1.0))

    def _renew(self) -> None:
        assert self.ownership is not None
        renewed = True
        try:
            for name in self.ownership.renew():
                log.warning(
                    "cloudlet %s: lease lost to another replica", name, extra={"cloudlet": name}
                )
                self.metrics.forget(name)
        except CloudletError as err:
            renewed = False
            log.warning("lease renewal failed: %s", err)
        try:  # after renewing: a failed heartbeat must not cost the leases
            self.ownership.heartbeat()
        except CloudletError as err:
            renewed = False
            log.warning("heartbeat failed: %s", err)
        if renewed:
            self._renewed = self.clock()

    def _rebalance(self) -> None:
        own = self.ownership
        assert own is not None
        claimed: list[str] = []

        def may_release(name: str) -> bool:
            # Held like a worker holds it, so no reconcile of it starts while
            # it changes hands; one running now delays the hand-over instead.
            if self.queue.claim(name):
                claimed.append(name)
                return True
            return False

        try:
            gained, released = own.rebalance(self._seen, may_release)
        except CloudletError as err:
            log.warning("rebalance failed: %s", err)
            return
        finally:
            for name in claimed:
                self.queue.done(name)
        for name in gained:
            log.info("cloudlet %s: now owned by %s", name, own.replica, extra={"cloudlet": name})
            self.queue.add(name)
        for name in released:
            log.info("cloudlet %s: handed over", name, extra={"cloudlet": name})
            self.metrics.forget(name)
        self.metrics.owned.labels(own.replica).set(len(own.held))

    def _watch(self) -> None:
        last = -1
        while not self.stop.is_set():
            try:
                revision = self.repo.store.revision()
                if revision != last:
                    self._notice_changes()
                    last = revision
                self._store_read, self._store_error = self.clock(), None
            except CloudletError as err:
                if self._store_error is None:  # once per outage, not once per poll
                    log.warning("cannot read desired state: %s", err)
                self._store_error = str(err)
            self._poke.wait(self.options.poll)
            self._poke.clear()

    def _stream(self) -> None:
        """Wake the poll loop on each desired-state change the store pushes.

        Level-triggered: an event only says "look now"; what changed is read
        by ``_notice_changes`` as on every poll, so a missed or compacted
        event costs at most one poll interval, never a change.
        """
        store = self.repo.store
        assert isinstance(store, Watchable)
        while not self.stop.is_set():
            try:
                start = self.repo.store.revision() + 1
                for _ in store.watch(DESIRED, start, self.stop):
                    self._poke.set()
            except WatchCompacted:
                self._poke.set()
            except CloudletError as err:
                log.warning("watch of desired state broke: %s", err)
                self.stop.wait(1.0)

    def _notice_changes(self) -> None:
        current = {r.name: r.revision for r in self.repo.list_desired()}
        changed = [n for n, rev in current.items() if self._seen.get(n) != rev]
        if self.ownership is not None and changed:
            self.ownership.rebalance(n for n in changed if not self.ownership.owns(n))
        for name in changed:
            # The first look at each stored cloudlet is not news; a new revision is.
            level = logging.INFO if name in self._seen else logging.DEBUG
            log.log(
                level,
                "cloudlet %s: desired revision %d",
                name,
                current[name],
                extra={"cloudlet": name, "revision": current[name]},
            )
            self.queue.add(name)
        for name in set(self._seen) - set(current):
            log.info("cloudlet %s: forgotten (destroyed)", name, extra={"cloudlet": name})
            self.queue.drop(name)
            self.metrics.forget(name)
        self._seen = current
        if self.ownership is None:
            self.metrics.owned.labels(self.metrics.replica).set(len(current))

    def _work(self) -> None:
        while not self.stop.is_set():
            name = self.queue.get(timeout=0.5)
            if name is None:
                continue
            try:
                self._reconcile_and_requeue(name)
            except Exception as err:  # one cloudlet's bad luck must not cost a worker
                log.error(
                    "cloudlet %s: reconcile crashed (%s: %s); retrying in %.1f s",
                    name,
                    type(err).__name__,
                    err,
                    self.queue.retry(name),
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
            finally:
                self.queue.done(name)

    def _reconcile_and_requeue(self, name: str) -> None:
        t0 = time.perf_counter()
        reason, error = "reconcile", None
        try:
            report, reason = self._reconcile(name)
        except CloudletError as err:
            report, error = None, err
        wall = time.perf_counter() - t0
        if report is None:
            if error is None or self._gone_or_not_ours(name):
                self.metrics.forget(name)
                return  # nothing for this replica to keep converged
            report = SyncReport(name, message=f"reconcile failed: {error}")
        self.metrics.reconcile_seconds.labels(report.outcome).observe(wall)
        retry_in = self._requeue(name, report.outcome)
        log_reconcile(name, report, reason, wall, retry_in)

    def _requeue(self, name: str, outcome: str) -> float | None:
        """Queue the next look at ``name``; returns the delay of a retry, if one."""
        if outcome == "converged":
            self.queue.forget(name)
            spread = self.options.resync * self.options.jitter
            self.queue.add(name, self.options.resync + self.rng.uniform(-spread, spread))
        elif outcome == "terminal":
            self.queue.drop(name)  # no retry can fix it: wait for a new revision
        elif outcome == "superseded":
            self.queue.forget(name)
            self.queue.add(name)  # the newer revision, at once
        else:
            return self.queue.retry(name)
        return None

    def _gone_or_not_ours(self, name: str) -> bool:
        if self.ownership is not None and not self.ownership.owns(name):
            return True
        try:
            return self.repo.get_desired(name) is None
        except CloudletError:
            return False  # the store is down: keep it queued, with backoff

    def reconcile(self, name: str) -> SyncReport | None:
        """One level-triggered pass: re-read everything, then act."""
        return self._reconcile(name)[0]

    def _reconcile(self, name: str) -> tuple[SyncReport | None, str]:
        """The pass and why it acts (``reason_for``); None: not this replica's to do."""
        if self.ownership is not None and not self.ownership.owns(name):
            return None, "not ours"  # another replica's: it reconciles it
        record = self.repo.get_desired(name)
        if record is None:
            return None, "destroyed"
        last = self.repo.get_sync(name)
        reason = reason_for(record.revision, last)
        if last is not None and last.terminal and last.revision == record.revision:
            message = f"waiting for a new desired revision ({last.message})"
            report = SyncReport(name, message=message, revision=record.revision, stopped="terminal")
            return report, reason
        try:
            cloudlet = structure(record.document)
        except SpecError as err:
            return self._invalid(name, record.revision, err), reason
        inner = self.provider_for(cloudlet)
        self.metrics.lbs.watch(cloudlet.name, inner)  # its LB agents' figures, at each scrape
        provider = InstrumentedProvider(inner, self.metrics)
        engine = Engine(
            self.repo,
            provider,
            SyncOptions(
                parallelism=self.options.parallelism, lock_timeout=self.options.lock_timeout
            ),
            listener=LoggedListener(name, record.revision, reason),
            stop=self.stop,
        )
        report = engine.reconcile(cloudlet, record.revision, heal="per-policy")
        self.metrics.record_steps(report.steps)
        if report.status is not None:
            self.metrics.record_status(name, report.status, report.converged)
        return report, reason

    def _invalid(self, name: str, revision: int, err: SpecError) -> SyncReport:
        """A stored spec that no longer validates: recorded once, not retried."""
        message = f"the stored desired state (revision {revision}) is invalid: {err}"
        recorded = record_terminal(
            self.repo,
            name,
            revision,
            message,
            at=time.time(),
            lock_timeout=self.options.lock_timeout,
        )
        if not recorded:
            message += " (not recorded: a newer revision is stored)"
        return SyncReport(name, message=message, revision=revision, stopped="terminal")
