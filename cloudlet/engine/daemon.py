"""``cloudlet reconcile``: keep every stored cloudlet converged, forever.

Level-triggered, like a Kubernetes controller: a watcher notices desired
specs whose revision changed and queues their names; workers take a name,
re-read the desired spec and the actual state, and sync. Every success
schedules the next periodic resync (jittered, so a thousand cloudlets do not
resync in one burst), which is what heals drift made behind our back; every
failure is retried with exponential backoff. The daemon dials out only (to
its store and the orchestrators); the one port it may open is for metrics.
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
from cloudlet.errors import CloudletError, SpecError, WatchCompacted
from cloudlet.model.codec import structure
from cloudlet.model.spec import Cloudlet
from cloudlet.providers.base import Provider
from cloudlet.shepherd.metrics import InstrumentedProvider, Metrics
from cloudlet.store.base import Watchable
from cloudlet.store.ownership import Ownership
from cloudlet.store.records import DESIRED, StateRepo

log = logging.getLogger("cloudlet.daemon")


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

    def __attrs_post_init__(self) -> None:
        if self.ownership is not None:
            self.repo = self.repo.fenced(self.ownership.fence, actor=self.ownership.replica)

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
        try:
            for name in self.ownership.renew():
                log.warning("cloudlet %s: lease lost to another replica", name)
        except CloudletError as err:
            log.warning("lease renewal failed: %s", err)
        try:  # after renewing: a failed heartbeat must not cost the leases
            self.ownership.heartbeat()
        except CloudletError as err:
            log.warning("heartbeat failed: %s", err)

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
            log.info("cloudlet %s: now owned by %s", name, own.replica)
            self.queue.add(name)
        for name in released:
            log.info("cloudlet %s: handed over", name)
        self.metrics.owned.labels(own.replica).set(len(own.held))

    def _watch(self) -> None:
        last = -1
        while not self.stop.is_set():
            try:
                revision = self.repo.store.revision()
                if revision != last:
                    self._notice_changes()
                    last = revision
            except CloudletError as err:
                log.warning("cannot read desired state: %s", err)
            self.metrics.queue_depth.set(self.queue.depth())
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
            log.info("cloudlet %s: desired revision %d", name, current[name])
            self.queue.add(name)
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
        try:
            report = self.reconcile(name)
        except CloudletError as err:
            log.warning("cloudlet %s: reconcile failed: %s", name, err)
            report = None
        outcome = report.outcome if report is not None else "failed"
        self.metrics.reconcile_seconds.labels(outcome).observe(time.perf_counter() - t0)
        if report is None and self._gone_or_not_ours(name):
            self.metrics.lbs.forget(name)
            return  # nothing for this replica to keep converged
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
            delay = self.queue.retry(name)
            log.info("cloudlet %s: retrying in %.1f s", name, delay)

    def _gone_or_not_ours(self, name: str) -> bool:
        if self.ownership is not None and not self.ownership.owns(name):
            return True
        try:
            return self.repo.get_desired(name) is None
        except CloudletError:
            return False  # the store is down: keep it queued, with backoff

    def reconcile(self, name: str) -> SyncReport | None:
        """One level-triggered pass: re-read everything, then act."""
        if self.ownership is not None and not self.ownership.owns(name):
            return None  # another replica's: it reconciles it
        record = self.repo.get_desired(name)
        if record is None:
            return None
        last = self.repo.get_sync(name)
        if last is not None and last.terminal and last.revision == record.revision:
            message = f"waiting for a new desired revision ({last.message})"
            return SyncReport(name, message=message, revision=record.revision, stopped="terminal")
        try:
            cloudlet = structure(record.document)
        except SpecError as err:
            return self._invalid(name, record.revision, err)
        inner = self.provider_for(cloudlet)
        self.metrics.lbs.watch(cloudlet.name, inner)  # its LB agents' figures, at each scrape
        provider = InstrumentedProvider(inner, self.metrics)
        engine = Engine(
            self.repo,
            provider,
            SyncOptions(
                parallelism=self.options.parallelism, lock_timeout=self.options.lock_timeout
            ),
            stop=self.stop,
        )
        report = engine.reconcile(cloudlet, record.revision, heal="per-policy")
        self.metrics.record_steps(report.steps)
        if report.status is not None:
            self.metrics.record_status(name, report.status, report.converged)
        log.info(
            "cloudlet %s: %s (%s) in %.2f s",
            name,
            "converged" if report.converged else "not converged",
            report.message,
            report.wall,
        )
        return report

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
        if recorded:
            log.error("cloudlet %s: %s; waiting for a new revision", name, message)
        return SyncReport(name, message=message, revision=revision, stopped="terminal")
