"""Applying one step through a provider: journaled, retried, idempotent.

The journal entry is written before the provider is called and removed
after it answers, so a run killed in between leaves a record of what was in
flight; the next run re-observes and the provider adopts by tag whatever
the killed call created, so nothing is created twice.

Entries and attempt counts are keyed by the step (``Step.key``), the walk's
own unit: the steps on copies of one id (``delete:vm/x@uid``), or the
delete and create of one replacement, may run side by side or one after
the other, and each is on record by itself.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

import attrs

from cloudlet.engine.retry import Attempts, RetryPolicy, call_with_retry
from cloudlet.errors import ProviderError
from cloudlet.planner import Step
from cloudlet.providers.base import Provider
from cloudlet.store.records import StateRepo

log = logging.getLogger("cloudlet.engine")


def _call(provider: Provider, owner: str, step: Step) -> None:
    change = step.change
    if step.phase == "create":
        assert change.desired is not None
        provider.create(owner, change.desired)
    elif step.phase == "update":
        assert change.desired is not None and change.current is not None
        provider.update(owner, change.desired, change.current)
    else:
        assert change.current is not None
        provider.delete(owner, change.current)


@attrs.define
class StepRunner:
    """Runs steps of one cloudlet; shared by the walk's worker threads."""

    owner: str
    provider: Provider
    repo: StateRepo
    policy: RetryPolicy = attrs.field(factory=RetryPolicy)
    sleep: Callable[[float], None] = time.sleep
    wallclock: Callable[[], float] = time.time
    seed: int | None = None
    #: Provider calls each step took, by step key.
    attempts: dict[str, int] = attrs.field(factory=dict)
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    def __call__(self, step: Step) -> None:
        key = self._begin(step)
        tally = Attempts()
        rng = random.Random(f"{self.seed}:{step.key}") if self.seed is not None else None
        try:
            call_with_retry(
                lambda: _call(self.provider, self.owner, step),
                self.policy,
                sleep=self.sleep,
                rng=rng,
                attempts=tally,
            )
        except ProviderError as err:
            # Debug only: the listener (CLI progress, daemon log) tells the failure once.
            tries = "1 attempt" if tally.count == 1 else f"{tally.count} attempts"
            log.debug("%s failed after %s: %s", step.key, tries, err)
            self._done(step, key, tally)
            raise
        # Anything else (a crash, an interrupt) leaves the journal entry: the
        # action really is in flight as far as anyone can tell.
        self._done(step, key, tally)

    def _begin(self, step: Step) -> str:
        current = step.change.current
        # A replacement's create acts on no existing object: the old one is
        # its delete step's.
        uid = current.uid if current is not None and step.phase != "create" else None
        return self.repo.journal_begin(
            self.owner, step.key, step.phase, self.wallclock(), resource=step.change.id, uid=uid
        )

    def _done(self, step: Step, key: str, tally: Attempts) -> None:
        with self._lock:
            self.attempts[step.key] = tally.count
        self.repo.journal_end(key)
