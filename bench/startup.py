"""Start-up benchmark: how long ``cloudlet`` takes before it does anything.

Figures (printed, never asserted; issue 11's target is "well under 0.3 s"
for ``--version`` and ``validate``): for ``--version``, ``validate`` of an
example and ``plan --help``, the median wall time of several runs of a fresh
interpreter, and the total of ``python -X importtime`` (the sum of every
module's own import time, so what importing costs apart from the
interpreter's start), with the costliest top-level imports. A bare ``python
-c pass`` is timed too, the floor no change to cloudlet can go under.

Bytecode is cached in a temporary ``PYTHONPYCACHEPREFIX`` warmed by one
untimed run, as an installed package has its ``.pyc`` files: a session
with ``PYTHONDONTWRITEBYTECODE`` would otherwise time the compiler.
Run with ``.venv/bin/python bench/startup.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 0.3
COMMANDS = {
    "--version": ["--version"],
    "validate": ["validate", str(ROOT / "examples" / "openstack.yaml")],
    "plan --help": ["plan", "--help"],
}
#: Libraries the issue names: none of them may load for the commands above.
HEAVY = ("openstack", "keystoneauth1", "pyVmomi", "grpc", "pyetcd", "prometheus_client")
HEAVY_TOO = ("rich", "networkx", "cloudlet.planner", "cloudlet.engine")


def environment(cache: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = cache
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def wall(argv: list[str], env: dict[str, str], runs: int) -> float:
    """The median wall time of ``runs`` fresh interpreters running ``argv``."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def importtime(argv: list[str], env: dict[str, str]) -> tuple[float, list[tuple[float, str]]]:
    """The sum of self times in ``-X importtime`` (s), and the costliest
    packages by cumulative time (s, name): a library counts once, at the
    outermost import of its top-level package, cloudlet's own modules apart."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *argv[1:]],
        env=env,
        capture_output=True,
        text=True,
    )
    rows = []
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "self [us]" not in line:
            own, cumulative, name = line.removeprefix("import time:").split("|")
            rows.append((int(own) / 1e6, int(cumulative) / 1e6, name))
    total = sum(own for own, _, _ in rows)
    tops: list[tuple[float, str]] = []
    ancestors: list[tuple[int, str]] = []  # importtime prints a module after what it imported
    for own, cumulative, raw in reversed(rows):
        depth, name = len(raw) - len(raw.lstrip(" ")), raw.strip()
        while ancestors and ancestors[-1][0] >= depth:
            ancestors.pop()
        inside_library = any("." not in a and not a.startswith("cloudlet") for _, a in ancestors)
        ancestors.append((depth, name))
        if inside_library:
            continue
        if "." not in name and name not in ("cloudlet", "site", "encodings"):
            tops.append((cumulative, name))
        elif name.startswith("cloudlet.") and name.count(".") == 2:
            tops.append((own, name))
    return total, sorted(tops, reverse=True)[:6]


def loaded_heavy(argv: list[str], env: dict[str, str]) -> list[str]:
    """Which of HEAVY and HEAVY_TOO the command imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *argv[1:]], env=env, capture_output=True, text=True
    )
    names = {line.split("|")[-1].strip() for line in done.stderr.splitlines()}
    return [h for h in HEAVY + HEAVY_TOO if h in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per median (default 7)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cloudlet-pyc-") as cache:
        env = environment(cache)
        floor = wall([sys.executable, "-c", "pass"], env, args.runs)
        print("== start-up (median of", args.runs, "runs; target <", TARGET_S, "s)")
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"  load average {load} on {os.cpu_count()} cores (busy cores slow every figure)")
        print(f"  python -c pass        {floor * 1000:7.1f} ms  (the interpreter alone)")
        for title, rest in COMMANDS.items():
            argv = [sys.executable, "-m", "cloudlet", *rest]
            wall(argv, env, 1)  # warm the bytecode cache
            seconds = wall(argv, env, args.runs)
            total, tops = importtime(argv, env)
            heavy = loaded_heavy(argv, env)
            verdict = "ok" if seconds < TARGET_S else "OVER TARGET"
            print(
                f"  {title:<20}  {seconds * 1000:7.1f} ms  importtime total "
                f"{total * 1000:6.1f} ms  {verdict}"
            )
            print("      costliest: " + ", ".join(f"{n} {s * 1000:.0f} ms" for s, n in tops))
            print("      heavy libraries loaded: " + (", ".join(heavy) or "none"))


if __name__ == "__main__":
    main()
