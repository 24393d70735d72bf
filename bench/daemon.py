"""Daemon figures on the embedded store: watch-to-first-action latency and
the cost of a no-op resync of many cloudlets. Printed, never asserted."""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from specs import generated

from cloudlet.engine.daemon import Daemon, DaemonOptions
from cloudlet.engine.sync import Engine
from cloudlet.model.codec import unstructure
from cloudlet.model.resources import Observed, Resource
from cloudlet.model.spec import Cloudlet
from cloudlet.providers.fake import FakeProvider
from cloudlet.shepherd.metrics import Metrics
from cloudlet.store.records import StateRepo
from cloudlet.store.sqlite import open_store


class Recorder(FakeProvider):
    """Notes when the first mutating call after a spec change arrives."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.first_call = threading.Event()
        self.at = 0.0

    def _note(self) -> None:
        if not self.first_call.is_set():
            self.at = time.perf_counter()
            self.first_call.set()

    def update(self, owner: str, resource: Resource, current: Observed) -> Observed:
        self._note()
        return super().update(owner, resource, current)

    # the first call a change causes: an update, or a create for a replacement
    # (m1.large -> m1.small shrinks the root disk: the fake refuses that resize,
    # as Nova does, so the plan replaces the VM)
    def create(self, owner: str, resource: Resource) -> Observed:
        self._note()
        return super().create(owner, resource)

    def delete(self, owner: str, current: Observed) -> None:
        self._note()
        super().delete(owner, current)


def watch_latency(changes: int, poll: float) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        repo = StateRepo(open_store(state))
        provider = Recorder(state)
        spec = generated("watch", networks=1, clusters=0, nodes=0, vms=3, lbs=1)
        Engine(repo, provider).sync(spec)
        daemon = Daemon(
            repo,
            lambda c: provider,
            Metrics("bench"),
            DaemonOptions(resync=3600, poll=poll, workers=2),
        )
        runner = threading.Thread(target=daemon.run)
        runner.start()
        time.sleep(0.5)
        out = time_changes(repo, provider, spec, changes, settle=0.02)
        daemon.stop.set()
        runner.join()
        return out


def time_changes(
    repo: StateRepo, provider: Recorder, spec: Cloudlet, changes: int, *, settle: float
) -> list[float]:
    """Flip one VM's flavor ``changes`` times; seconds from each put of the
    desired state to the first provider call it causes."""
    doc = unstructure(spec)
    flavors = ["m1.large", "m1.small"]  # the generated VMs start on the default flavor
    out = []
    for i in range(changes):
        doc["spec"]["vms"][0]["flavor"] = flavors[i % 2]
        provider.first_call.clear()
        t0 = time.perf_counter()
        repo.put_desired(spec.name, doc, at=time.time())
        if provider.first_call.wait(10):
            out.append(provider.at - t0)
        time.sleep(settle)  # let that reconcile finish, so each change starts idle
    return out


def noop_resync(count: int, workers: int) -> tuple[int, float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        repo = StateRepo(open_store(state))
        provider = FakeProvider(state)
        names = []
        t = time.perf_counter()
        for i in range(count):
            spec = generated(f"c-{i}", networks=1, clusters=1, nodes=4, vms=10, lbs=1)
            Engine(repo, provider).sync(spec)
            names.append(spec.name)
        setup = time.perf_counter() - t
        resources = len(provider.observe(names[0]))
        daemon = Daemon(repo, lambda c: provider, Metrics("bench"))
        t = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            reports = list(pool.map(daemon.reconcile, names))
        wall = time.perf_counter() - t
        assert all(r is not None and r.converged and not r.steps for r in reports)
        return resources, setup, wall


def main() -> None:
    quick = "--quick" in sys.argv
    for poll in (0.1, 0.02):
        lat = sorted(watch_latency(50 if quick else 200, poll))
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        print(
            f"watch → first provider call, poll {poll * 1000:.0f} ms, {len(lat)} changes: "
            f"median {statistics.median(lat) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms "
            "(floor: median ≤ 100 ms)"
        )
    count = 100 if quick else 1000
    resources, setup, wall = noop_resync(count, workers=4)
    print(
        f"{count} cloudlets of {resources} resources: initial sync {setup:.1f} s; "
        f"no-op resync of all, one replica, 4 workers: {wall:.2f} s "
        f"({wall / count * 1000:.1f} ms per cloudlet; floor for 1,000: ≤ 60 s)"
    )


if __name__ == "__main__":
    main()
