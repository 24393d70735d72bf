"""A real engine on a real (simulated) cloud in a temp dir, plus crash injection."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections import Counter
from pathlib import Path

from cloudlet.engine.sync import Engine, SyncOptions, SyncReport
from cloudlet.model.expand import expand
from cloudlet.model.resources import Observed, Resource
from cloudlet.model.spec import Cloudlet
from cloudlet.providers.fake import FakeProvider
from cloudlet.store.records import StateRepo
from cloudlet.store.sqlite import open_store


def examples(n: int) -> int:
    """``n`` hypothesis examples, times ``CLOUDLET_HYPOTHESIS_SCALE`` (``make soak``):
    CI runs the base budget; a soak run looks much further for the rare case."""
    return n * max(1, int(os.environ.get("CLOUDLET_HYPOTHESIS_SCALE", "1")))


class SimulatedCrash(BaseException):
    """Like kill -9 seen from inside: no handler runs, nothing is cleaned up."""


class CrashingProvider:
    """Forwards to a provider until call ``after``, then crashes for good.

    With ``during`` the fatal call reaches the cloud first (the cloud acted,
    the client never heard back), as when a process dies mid-request.
    """

    def __init__(self, inner: FakeProvider, after: int, during: bool) -> None:
        self.inner, self.after, self.during = inner, after, during
        self.calls = 0
        self.crashed = False
        self.lock = threading.Lock()

    def _gate(self) -> bool:
        with self.lock:
            if self.crashed:
                raise SimulatedCrash()
            self.calls += 1
            if self.calls < self.after:
                return False
            self.crashed = True
            if not self.during:
                raise SimulatedCrash()
            return True

    def observe(self, owner: str) -> list[Observed]:
        if self.crashed:
            raise SimulatedCrash()
        return self.inner.observe(owner)

    def create(self, owner: str, resource: Resource) -> Observed:
        fatal = self._gate()
        result = self.inner.create(owner, resource)
        if fatal:
            raise SimulatedCrash()
        return result

    def update(self, owner: str, resource: Resource, current: Observed) -> Observed:
        fatal = self._gate()
        result = self.inner.update(owner, resource, current)
        if fatal:
            raise SimulatedCrash()
        return result

    def delete(self, owner: str, current: Observed) -> None:
        fatal = self._gate()
        self.inner.delete(owner, current)
        if fatal:
            raise SimulatedCrash()

    def replacement_reason(self, resource: Resource, current: Observed) -> str | None:
        return self.inner.replacement_reason(resource, current)

    def close(self) -> None:
        return None


class World:
    """One state dir: the store, the simulated cloud, and engines over them."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="cloudlet-prop-"))
        self.store = open_store(self.dir)
        self.repo = StateRepo(self.store)
        self.cloud = FakeProvider(self.dir)

    def engine(self, provider: object | None = None, parallelism: int = 4) -> Engine:
        return Engine(
            self.repo,
            provider or self.cloud,  # type: ignore[arg-type]
            SyncOptions(parallelism=parallelism, seed=0),
            sleep=lambda s: None,
        )

    def sync(
        self, cloudlet: Cloudlet, provider: object | None = None, parallelism: int = 4
    ) -> SyncReport:
        return self.engine(provider, parallelism).sync(cloudlet)

    def faulty(self, rate: float, seed: int) -> FakeProvider:
        return FakeProvider(self.dir, failure_rate=rate, seed=seed, sleep=lambda s: None)

    def crash_sync(self, cloudlet: Cloudlet, after: int, during: bool) -> None:
        provider = CrashingProvider(self.cloud, after, during)
        with contextlib.suppress(SimulatedCrash):
            # One worker: where a crash lands must depend only on the drawn
            # inputs, or hypothesis cannot replay and shrink a failure.
            self.engine(provider, parallelism=1).sync(cloudlet)

    def assert_converged_to(self, cloudlet: Cloudlet) -> None:
        """Cloud == expansion of the spec: nothing missing, duplicated or orphaned,
        and no address held twice in one pool."""
        objs = self.cloud.observe(cloudlet.name)
        counts = Counter(o.id for o in objs if o.id is not None)
        dupes = {k: n for k, n in counts.items() if n > 1}
        assert not dupes, f"duplicated: {dupes}"
        want = expand(cloudlet, self.repo.get_ports(cloudlet.name)).by_id()
        assert set(counts) == set(want), (
            f"missing {sorted(set(want) - set(counts))}, orphaned {sorted(set(counts) - set(want))}"
        )
        for o in objs:
            if o.id in want:
                for key, value in want[o.id].attrs.items():
                    assert o.attrs.get(key) == value, (o.id, key, o.attrs.get(key), value)
        held = Counter(
            (o.attrs.get("subnet") or o.attrs.get("network"), o.attrs["address"])
            for o in objs
            if o.kind in ("port", "vip") and o.attrs.get("address")
        )
        assert not [k for k, n in held.items() if n > 1], f"addresses held twice: {held}"
        assert self.engine().plan(cloudlet).empty
        assert self.cloud.cloud.violations() == [], self.cloud.cloud.violations()

    def close(self) -> None:
        self.cloud.close()
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)
