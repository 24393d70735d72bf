"""Scale benchmark: whole ``cloudlet`` processes at 1k, 10k and 100k resources.

For each size, a generated spec (``specs.sized``: the same mix at every
size) on the fake cloud at zero latency, in a fresh state directory: plan
from nothing, sync from nothing, no-op plan, no-op sync and ``status
--json``, each a fresh interpreter timed from spawn to exit, with its CPU
time and peak RSS from ``os.wait4`` (that child's own, not the maximum over
every child so far). Then the growth per 1,000 resources between sizes and
the floors of issue 13 with pass/fail. Figures are printed, never asserted:
a busy machine moves them (the load average is printed first).

    .venv/bin/python bench/scale.py [--sizes 1k,10k,100k] [--runs N]

``BENCH_SIZES`` (e.g. ``BENCH_SIZES=1k,10k make bench``) and ``BENCH_RUNS``
set the same from the environment. ``--keep DIR`` leaves each size's spec
and state and the commands' output in ``DIR/<size>``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from startup import environment

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SIZES = "1k,10k,100k"
#: Issue 13's floors: whole processes, zero latency, a quiet machine.
PLAN_10K_S, SYNC_10K_S, LINEAR_SLACK, RSS_100K_MB = 1.0, 8.0, 1.2, 1536.0


@attrs.frozen
class Run:
    """One whole process: wall and CPU seconds, peak RSS, exit status."""

    wall_s: float
    cpu_s: float
    rss_mb: float
    code: int


def parse_size(text: str) -> int:
    """``1k``, ``10000``, ``1.5k``, ``1m`` as a number of resources."""
    text = text.strip().lower().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("km")) * scale)


def label(size: int) -> str:
    return f"{size // 1000}k" if size % 1000 == 0 else str(size)


def _pruned(value: Any) -> Any:
    """The spec document without nulls and empty lists: the defaults the
    loader fills in again, left out so a 100k spec stays small."""
    if isinstance(value, dict):
        return {k: _pruned(v) for k, v in value.items() if v is not None and v != [] and v != {}}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def write_spec(path: Path, size: int, mix: str = "sized") -> Path:
    """A spec of about ``size`` resources at ``path``; ``mix`` ``wide`` is
    ``specs.large``'s VM-heavy mix (the issue's 10k spec; up to ~30k, past
    which the loader's node budget refuses it)."""
    from specs import generated, sized

    from cloudlet.model.codec import unstructure

    if mix == "wide":
        scale = max(1, round(size / 10_000 * 40))
        cloudlet = generated(
            f"wide-{size}", networks=scale, clusters=scale, nodes=41, vms=45 * scale
        )
    else:
        cloudlet = sized(size)
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    path.write_text(yaml.dump(_pruned(unstructure(cloudlet)), Dumper=dumper, sort_keys=False))
    return path


def cloudlet_name(spec: Path) -> str:
    document = yaml.load(spec.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return str(document["metadata"]["name"])


@attrs.frozen
class Cli:
    """How the benchmarks start ``cloudlet``: the checkout it runs from
    (``--tree``: another checkout's code, to compare before and after) and
    an environment whose bytecode cache ``warm`` fills first, as an
    installed package has its ``.pyc`` files (else the first figure times
    the compiler: 1.4 s of a cold 10k plan)."""

    tree: Path
    env: dict[str, str]

    @classmethod
    def at(cls, tree: Path, cache: Path) -> Cli:
        env = environment(str(cache))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")]))
        return cls(tree.resolve(), env)

    def argv(self, state: Path, rest: Sequence[str]) -> list[str]:
        return [sys.executable, "-m", "cloudlet", "--state-dir", str(state), *rest]

    def run(self, state: Path, rest: Sequence[str], log: Path) -> Run:
        """``cloudlet --state-dir STATE REST`` in a fresh interpreter, output to ``log``."""
        with log.open("w") as out:
            start = time.perf_counter()
            child = subprocess.Popen(
                self.argv(state, rest),
                cwd=self.tree,  # ``-m`` puts the working directory first on the path
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
            _, status, usage = os.wait4(child.pid, 0)
            wall = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        cpu = usage.ru_utime + usage.ru_stime
        return Run(wall, cpu, usage.ru_maxrss / 1024, child.returncode)

    def warm(self, where: Path) -> None:
        """Every step once on a small spec: every module compiled and cached."""
        where.mkdir(parents=True, exist_ok=True)
        spec = write_spec(where / "spec.yaml", 200)
        fill = {"spec": str(spec), "name": cloudlet_name(spec)}
        for title, rest, ok in STEPS:
            log = where / "warm.log"
            checked(
                self.run(where / "state", [a.format(**fill) for a in rest], log), ok, title, log
            )


def checked(run: Run, expected: Sequence[int], what: str, log: Path) -> Run:
    if run.code not in expected:
        tail = "\n".join(log.read_text().splitlines()[-10:])
        raise SystemExit(f"{what} exited {run.code} (expected {expected}):\n{tail}")
    return run


def median_run(runs: Sequence[Run]) -> Run:
    return Run(
        statistics.median(r.wall_s for r in runs),
        statistics.median(r.cpu_s for r in runs),
        max(r.rss_mb for r in runs),
        runs[-1].code,
    )


#: (figure, argv, exit codes that mean it worked), in order in one state directory.
STEPS = (
    ("plan", ["plan", "{spec}"], (2,)),
    ("sync", ["sync", "{spec}", "--yes", "--json"], (0,)),
    ("no-op plan", ["plan", "{spec}"], (0,)),
    ("no-op sync", ["sync", "{spec}", "--yes", "--json"], (0,)),
    ("status", ["status", "{name}", "--json"], (0,)),
)


def measure(size: int, runs: int, cli: Cli, where: Path) -> dict[str, Run]:
    """Every figure at one size, ``runs`` times over, each run in a fresh
    state directory (so plan and sync start from nothing)."""
    where.mkdir(parents=True, exist_ok=True)
    spec = write_spec(where / "spec.yaml", size)
    fill = {"spec": str(spec), "name": cloudlet_name(spec)}
    out: dict[str, list[Run]] = {}
    for i in range(runs):
        state = where / f"state-{i}"
        for title, argv, ok in STEPS:
            log = where / f"{title.replace(' ', '-')}.log"
            run = cli.run(state, [a.format(**fill) for a in argv], log)
            out.setdefault(title, []).append(checked(run, ok, f"{title} at {size}", log))
    return {title: median_run(rs) for title, rs in out.items()}


def expanded_count(spec: Path) -> int:
    from cloudlet.model.expand import expand
    from cloudlet.model.load import load_file

    return sum(len(expand(c).resources) for c in load_file(str(spec)))


FIGURES = ("plan", "sync", "no-op plan", "no-op sync", "status")


def show_sizes(results: dict[int, dict[str, Run]], counts: dict[int, int]) -> None:
    print("  resources  " + "".join(f"{f:>14}" for f in FIGURES) + "   peak RSS")
    for size, figures in results.items():
        cells = "".join(f"{figures[f].wall_s:>12.2f} s" for f in FIGURES)
        rss = max(r.rss_mb for r in figures.values())
        print(f"  {counts[size]:>9,}  {cells}  {rss:>6.0f} MB")
    print("  (wall seconds, median of runs; CPU seconds:)")
    for size, figures in results.items():
        cells = "".join(f"{figures[f].cpu_s:>12.2f} s" for f in FIGURES)
        print(f"  {counts[size]:>9,}  {cells}")


def show_growth(results: dict[int, dict[str, Run]], counts: dict[int, int]) -> None:
    """Seconds added per 1,000 resources between neighbouring sizes: flat
    along a row is linear; a rising row is what issue 13 is about."""
    sizes = list(results)
    print("\n== growth per 1,000 resources (wall seconds added / 1k resources)")
    for a, b in itertools.pairwise(sizes):
        per = (counts[b] - counts[a]) / 1000
        cells = "".join(
            f"{(results[b][f].wall_s - results[a][f].wall_s) / per:>12.3f} s" for f in FIGURES
        )
        print(f"  {label(a):>4} → {label(b):<4}{cells}")


def floor(title: str, value: str, bound: str, ok: bool) -> None:
    print(f"  {title:<24}{value:>10}  ({bound})  {'pass' if ok else 'FAIL'}")


def show_floors(results: dict[int, dict[str, Run]], counts: dict[int, int]) -> None:
    print("\n== floors (issue 13; benchmarks, not tests: a quiet machine decides)")
    ten, hundred = results.get(10_000), results.get(100_000)
    if ten:
        plan, sync = ten["plan"].wall_s, ten["sync"].wall_s
        floor("plan 10k from nothing", f"{plan:.2f} s", f"≤ {PLAN_10K_S} s", plan <= PLAN_10K_S)
        floor("sync 10k from nothing", f"{sync:.2f} s", f"≤ {SYNC_10K_S} s", sync <= SYNC_10K_S)
    if ten and hundred:
        linear = counts[100_000] / counts[10_000]
        bound = f"≤ {LINEAR_SLACK} x {linear:.2f} linear = {LINEAR_SLACK * linear:.2f}"
        for f in ("plan", "sync", "no-op sync"):
            growth = hundred[f].wall_s / ten[f].wall_s
            floor(f"{f} 10k → 100k", f"x {growth:.2f}", bound, growth <= LINEAR_SLACK * linear)
    if hundred:
        rss = max(r.rss_mb for r in hundred.values())
        floor("peak RSS at 100k", f"{rss:.0f} MB", f"≤ {RSS_100K_MB:.0f} MB", rss <= RSS_100K_MB)
    if not ten or not hundred:
        print("  (the floors need sizes 10k and 100k; some were not run)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=os.environ.get("BENCH_SIZES", DEFAULT_SIZES))
    parser.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "1")))
    parser.add_argument("--keep", type=Path, help="leave specs and state under this directory")
    parser.add_argument("--tree", type=Path, default=ROOT, help="run the cloudlet of this checkout")
    args = parser.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print("== scale: whole processes, fake cloud at zero latency, parallelism 10")
    print(f"  load average {load} on {os.cpu_count()} cores (busy cores slow every figure)")
    if args.tree.resolve() != ROOT:
        print(f"  cloudlet from {args.tree}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cloudlet-scale-") as tmp:
        base = args.keep or Path(tmp)
        cli = Cli.at(args.tree, Path(tmp) / "pyc")
        cli.warm(Path(tmp) / "warm")
        results: dict[int, dict[str, Run]] = {}
        counts: dict[int, int] = {}
        for size in sizes:
            results[size] = measure(size, args.runs, cli, base / label(size))
            counts[size] = expanded_count(base / label(size) / "spec.yaml")
        show_sizes(results, counts)
        show_growth(results, counts)
        show_floors(results, counts)
    print(f"\n  (the scale benchmark took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
