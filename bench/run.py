"""cloudlet benchmarks: plan and sync figures, printed (never asserted).

Each scenario runs in its own process so that its peak RSS is its own.
Figures: expand and plan time, zero-latency sync time, no-op re-plan, peak
memory; and at 40 ms per provider call with parallelism 8, the makespan
against the lower bound max(critical path, total work / parallelism) using
each step's measured duration.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

FLOORS = {"plan_10k_s": 2.0, "sync_10k_s": 30.0, "makespan_ratio": 1.15}


def scenario(size: str, latency_ms: int, parallelism: int) -> dict[str, float]:
    import networkx as nx
    from bounds import step_bound
    from specs import large, medium

    from cloudlet.engine.sync import Engine, SyncOptions
    from cloudlet.model.expand import expand
    from cloudlet.planner import plan_actions
    from cloudlet.providers.fake import FakeProvider
    from cloudlet.store.records import StateRepo
    from cloudlet.store.sqlite import open_store

    cloudlet = large() if size == "large" else medium()
    out: dict[str, float] = {}
    t = time.perf_counter()
    expansion = expand(cloudlet)
    out["expand_s"] = time.perf_counter() - t
    out["resources"] = len(expansion.resources)
    t = time.perf_counter()
    plan = plan_actions(cloudlet.name, expansion.resources, [])
    out["plan_s"] = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        provider = FakeProvider(Path(tmp), latency_ms=latency_ms)
        engine = Engine(
            StateRepo(open_store(Path(tmp))), provider, SyncOptions(parallelism=parallelism)
        )
        t = time.perf_counter()
        report = engine.sync(cloudlet)
        out["sync_s"] = time.perf_counter() - t
        out["converged"] = float(report.converged)
        t = time.perf_counter()
        actual = provider.observe(cloudlet.name)
        out["observe_s"] = time.perf_counter() - t
        t = time.perf_counter()
        again = plan_actions(cloudlet.name, expansion.resources, actual)
        out["noop_plan_s"] = time.perf_counter() - t
        out["noop_plan_actions"] = len(again.actions)
        bound = step_bound(plan.graph, report.steps, parallelism)
        first = [s for s in report.steps if s.round == 1 and s.outcome == "ok"]
        graph = plan.graph
        makespan = bound["makespan_s"]
        # The same bound from the nominal per-call latency alone: what a
        # perfect scheduler on a free engine could not beat.
        hops: dict[str, int] = {}
        for node in reversed(list(nx.topological_sort(graph))):
            hops[node] = 1 + max((hops[n] for n in graph.successors(node)), default=0)
        chain = max(hops.values(), default=0)
        nominal = latency_ms / 1000 * max(chain, len(first) / parallelism)
        out["nominal_ratio"] = makespan / nominal if nominal else 0.0
        out.update(bound)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run_child(size: str, latency: int, parallelism: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", size, str(latency), str(parallelism)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def show(title: str, r: dict[str, float]) -> None:
    print(f"\n== {title}")
    print(f"  resources            {int(r['resources'])}")
    print(f"  expand               {r['expand_s'] * 1000:9.1f} ms")
    print(f"  plan (from nothing)  {r['plan_s'] * 1000:9.1f} ms")
    print(f"  sync                 {r['sync_s']:9.2f} s   converged={bool(r['converged'])}")
    print(f"  observe after sync   {r['observe_s'] * 1000:9.1f} ms")
    print(
        f"  no-op re-plan        {r['noop_plan_s'] * 1000:9.1f} ms "
        f"({int(r['noop_plan_actions'])} actions)"
    )
    print(
        f"  makespan {r['makespan_s']:.2f} s; lower bound {r['lower_bound_s']:.2f} s "
        f"(critical path {r['critical_path_s']:.2f} s, work {r['total_work_s']:.2f} s); "
        f"ratio {r['makespan_ratio']:.3f}"
    )
    if r["nominal_ratio"]:
        print(f"  makespan / nominal bound (40 ms x max(chain, steps/p)) {r['nominal_ratio']:.3f}")
    print(f"  peak RSS             {r['peak_rss_mb']:9.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=3)
    parser.add_argument("--quick", action="store_true", help="skip the 10k run at 40 ms")
    args = parser.parse_args()
    if args.child:
        size, latency, par = args.child
        print(json.dumps(scenario(size, int(latency), int(par))))
        return
    runs = [
        ("~500 resources, zero latency, parallelism 10", "medium", 0, 10),
        ("~10k resources, zero latency, parallelism 10", "large", 0, 10),
        ("~500 resources, 40 ms latency, parallelism 8", "medium", 40, 8),
    ]
    if not args.quick:
        runs.append(("~10k resources, 40 ms latency, parallelism 8", "large", 40, 8))
    results = {}
    for title, size, latency, par in runs:
        results[title] = run_child(size, latency, par)
        show(title, results[title])
    big = results["~10k resources, zero latency, parallelism 10"]
    ratios = [r["makespan_ratio"] for t, r in results.items() if "40 ms" in t]
    nominal = [r["nominal_ratio"] for t, r in results.items() if "40 ms" in t]
    print("\n== floors (issue 2)")
    print(f"  plan 10k   {big['plan_s']:.3f} s  (floor ≤ {FLOORS['plan_10k_s']} s)")
    print(f"  sync 10k   {big['sync_s']:.2f} s  (floor ≤ {FLOORS['sync_10k_s']} s)")
    print(
        f"  makespan ratio at 40 ms/p8: {', '.join(f'{x:.3f}' for x in ratios)}"
        f"  (floor ≤ {FLOORS['makespan_ratio']})"
    )
    print(f"  makespan / nominal-latency bound: {', '.join(f'{x:.3f}' for x in nominal)}")


if __name__ == "__main__":
    main()
