"""Daemon figures on the etcd store, against a real etcd started here:

(i)   watch-to-first-action latency (spec put → first mutating provider call),
      the daemon in-process on an ``EtcdStore``, ownership and fencing on;
(ii)  a no-op resync of many cloudlets of about 50 resources shared by two
      replicas (two in-process daemons with their own connections and
      ownership, on one etcd);
(iii) takeover time after ``kill -9`` of a ``cloudlet reconcile`` process.

Printed, never asserted. ``--quick`` shrinks every part; ``--cloudlets N``,
``--changes N``, ``--takeovers N`` and ``--lease-ttl S`` set them one by one.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from daemon import Recorder, time_changes  # bench/daemon.py
from etcd_server import EtcdServer  # the tests' etcd launcher
from specs import generated

from cloudlet.engine.daemon import Daemon, DaemonOptions
from cloudlet.engine.sync import Engine, SyncReport
from cloudlet.model.codec import unstructure
from cloudlet.providers.fake import FakeProvider
from cloudlet.shepherd.metrics import Metrics
from cloudlet.store.etcd import EtcdStore
from cloudlet.store.ownership import OWNERS, Ownership
from cloudlet.store.records import StateRepo


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def wait_until(check: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step)
    return False


# -- (i) watch to first action ------------------------------------------------


def watch_latency(endpoint: str, changes: int, poll: float) -> list[float]:
    prefix = f"/bench-watch-{int(poll * 1000)}"
    with tempfile.TemporaryDirectory() as tmp, EtcdStore(endpoint, prefix=prefix) as store:
        state = Path(tmp)
        repo = StateRepo(store)
        provider = Recorder(state)
        spec = generated("watch", networks=1, clusters=0, nodes=0, vms=3, lbs=1)
        Engine(repo, provider).sync(spec)
        daemon = Daemon(
            repo,
            lambda c: provider,
            Metrics("bench"),
            DaemonOptions(resync=3600, poll=poll, workers=2),
            ownership=Ownership(store, "bench", ttl=10),
        )
        runner = threading.Thread(target=daemon.run)
        runner.start()
        assert wait_until(
            lambda: daemon.ownership is not None and daemon.ownership.owns("watch"), 20
        )
        time.sleep(0.5)  # let the first reconcile after start-up finish
        out = time_changes(repo, provider, spec, changes, settle=0.05)
        daemon.stop.set()
        runner.join()
        return out


# -- (ii) no-op resync of many cloudlets, two replicas ------------------------


def noop_resync(endpoint: str, count: int, setup_workers: int) -> dict[str, float]:
    prefix = "/bench-resync"
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        names = [f"c-{i}" for i in range(count)]
        with EtcdStore(endpoint, prefix=prefix) as store:
            repo = StateRepo(store)
            provider = FakeProvider(state)

            def create(name: str) -> SyncReport:
                spec = generated(name, networks=1, clusters=1, nodes=4, vms=10, lbs=1)
                return Engine(repo, provider).sync(spec)

            t = time.perf_counter()
            with ThreadPoolExecutor(setup_workers) as pool:
                made = list(pool.map(create, names))
            setup = time.perf_counter() - t
            assert all(r.converged for r in made), "setup did not converge"
            resources = len(provider.observe(names[0]))

        replicas = []
        for rid in ("r1", "r2"):
            store = EtcdStore(endpoint, prefix=prefix)
            own = Ownership(store, rid, ttl=60)
            own_provider = FakeProvider(state)  # its own, as a separate process has
            daemon = Daemon(
                StateRepo(store),
                lambda c, p=own_provider: p,
                Metrics(rid),
                DaemonOptions(workers=4),
                ownership=own,
            )
            replicas.append((store, own, daemon))
        for _, own, _ in replicas:
            own.heartbeat()
        t = time.perf_counter()
        for _, own, _ in replicas:
            own.rebalance(names)
        claim = time.perf_counter() - t
        shares = [len(own.held) for _, own, _ in replicas]
        assert sum(shares) == count, f"ownership split {shares} of {count}"

        durations: list[float] = []
        lock = threading.Lock()

        def timed(daemon: Daemon, name: str) -> SyncReport | None:
            t0 = time.perf_counter()
            report = daemon.reconcile(name)
            if report is not None:
                with lock:
                    durations.append(time.perf_counter() - t0)
            return report

        def resync(daemon: Daemon) -> list[SyncReport]:
            assert daemon.ownership is not None
            mine = sorted(daemon.ownership.held)
            with ThreadPoolExecutor(daemon.options.workers) as pool:
                reports = list(pool.map(lambda n: timed(daemon, n), mine))
            return [r for r in reports if r is not None]

        t = time.perf_counter()
        with ThreadPoolExecutor(len(replicas)) as pool:
            results = list(pool.map(lambda r: resync(r[2]), replicas))
        wall = time.perf_counter() - t
        reports = [r for rs in results for r in rs]
        assert len(reports) == count, f"{len(reports)} of {count} reconciled"
        assert all(r.converged and not r.steps for r in reports), "a resync was not a no-op"
        for store, own, _ in replicas:
            own.leave()
            store.close()
        return {
            "resources": resources,
            "setup": setup,
            "claim": claim,
            "wall": wall,
            "median": statistics.median(durations),
            "p99": percentile(durations, 0.99),
            "share1": shares[0],
            "share2": shares[1],
        }


# -- (iii) takeover after kill -9 ---------------------------------------------


def takeover(endpoint: str, trials: int, ttl: float, cloudlets: int, seed: int = 1) -> list[float]:
    prefix = "/bench-takeover"
    rng = random.Random(seed)
    out = []
    with tempfile.TemporaryDirectory() as tmp, EtcdStore(endpoint, prefix=prefix) as store:
        state = Path(tmp)
        repo = StateRepo(store)
        names = [f"t-{i}" for i in range(cloudlets)]
        for name in names:
            spec = generated(name, networks=1, clusters=0, nodes=0, vms=2, lbs=1)
            repo.put_desired(name, unstructure(spec), at=time.time())

        def owners() -> dict[str, str]:
            return {
                e.key.rsplit("/", 1)[1]: json.loads(e.value)["replica"] for e in store.list(OWNERS)
            }

        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDLET_")}
        env["CLOUDLET_ETCD_PREFIX"] = prefix

        def spawn(rid: str) -> subprocess.Popen[bytes]:
            argv = [sys.executable, "-m", "cloudlet", "--state-dir", str(state)]
            argv += ["--etcd", endpoint, "reconcile", "--resync", "600"]
            argv += ["--lease-ttl", str(ttl), "--replica-id", rid]
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                cwd=state,
            )

        procs: dict[str, subprocess.Popen[bytes]] = {}
        try:
            for trial in range(trials):
                # Random phases, as in life: the replicas' upkeep loops (a
                # third of the TTL apart) start out of step, and the kill
                # falls anywhere in the victim's renewal period.
                for rid in (f"a{trial}", f"b{trial}"):
                    procs[rid] = spawn(rid)
                    time.sleep(rng.uniform(0, ttl / 3))
                ids = set(procs)
                if not wait_until(
                    lambda ids=ids: set(owners().values()) == ids and len(owners()) == cloudlets,
                    60 + 2 * ttl,
                ):
                    print(f"  trial {trial}: the two replicas never shared the cloudlets")
                    continue
                split = owners()
                victim = split[names[0]]
                survivor = next(r for r in ids if r != victim)
                time.sleep(rng.uniform(0, ttl / 3))
                procs[victim].kill()  # SIGKILL
                t0 = time.monotonic()
                procs[victim].wait()
                if wait_until(
                    lambda s=survivor: set(owners().values()) == {s} and len(owners()) == cloudlets,
                    ttl * 3 + 10,
                    step=0.02,
                ):
                    out.append(time.monotonic() - t0)
                else:
                    print(f"  trial {trial}: no takeover within {ttl * 3 + 10:.0f} s")
                procs[survivor].send_signal(signal.SIGTERM)
                procs[survivor].wait(30)
                procs.clear()
                # A graceful stop hands everything back: next trial starts clean.
                wait_until(lambda: not owners(), 10)
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    return out


def watch_figures(endpoint: str, changes: int) -> None:
    for poll in (0.1, 0.02):
        lat = watch_latency(endpoint, changes, poll)
        print(
            f"watch → first provider call, etcd, poll {poll * 1000:.0f} ms, "
            f"{len(lat)}/{changes} changes: median {statistics.median(lat) * 1000:.1f} ms, "
            f"p99 {percentile(lat, 0.99) * 1000:.1f} ms (floor: median ≤ 100 ms)"
        )


def resync_figures(endpoint: str, count: int) -> None:
    r = noop_resync(endpoint, count, setup_workers=4)
    print(
        f"{count} cloudlets of {r['resources']:.0f} resources on etcd: initial sync "
        f"{r['setup']:.1f} s; two replicas claimed {r['share1']:.0f} + {r['share2']:.0f} "
        f"in {r['claim']:.2f} s"
    )
    print(
        f"no-op resync of all {count}, two in-process replicas, 4 workers each: "
        f"{r['wall']:.2f} s wall ({r['wall'] / count * 1000:.1f} ms per cloudlet; "
        f"one reconcile median {r['median'] * 1000:.0f} ms, p99 {r['p99'] * 1000:.0f} ms) "
        "(floor: full no-op resync of 1,000 ≤ 60 s)"
    )


def takeover_figures(endpoint: str, trials: int, ttl: float, seed: int) -> None:
    took = takeover(endpoint, trials, ttl, cloudlets=8, seed=seed)
    if not took:
        print("takeover after kill -9: no trial completed")
        return
    print(
        f"takeover after kill -9 of a replica process, lease TTL {ttl:g} s, "
        f"{len(took)}/{trials} trials: median {statistics.median(took):.2f} s, "
        f"worst {max(took):.2f} s (floor: ≤ TTL + 2 s = {ttl + 2:g} s); "
        + ", ".join(f"{t:.2f}" for t in took)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--changes", type=int, default=None)
    parser.add_argument("--cloudlets", type=int, default=None)
    parser.add_argument("--takeovers", type=int, default=None)
    parser.add_argument("--lease-ttl", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1, help="of the takeover timing phases")
    parser.add_argument(
        "--only", choices=("watch", "resync", "takeover"), action="append", help="repeatable"
    )
    args = parser.parse_args()
    parts = set(args.only or ("watch", "resync", "takeover"))
    server = EtcdServer().start()
    try:
        print(f"etcd {server.binary} on {server.endpoint} (test server, --unsafe-no-fsync)")
        if "watch" in parts:
            watch_figures(server.endpoint, args.changes or (50 if args.quick else 200))
        if "resync" in parts:
            resync_figures(server.endpoint, args.cloudlets or (100 if args.quick else 1000))
        if "takeover" in parts:
            trials = args.takeovers or (1 if args.quick else 5)
            takeover_figures(server.endpoint, trials, args.lease_ttl, args.seed)
    finally:
        server.cleanup()


if __name__ == "__main__":
    main()
