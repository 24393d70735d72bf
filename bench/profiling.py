"""Profile one whole ``cloudlet`` command on a generated spec (see bench/README.md).

    .venv/bin/python bench/profiling.py TARGET [--size 10k] [--mix sized|wide]
        [--tool cprofile|py-spy] [--gc on|off] [--top 25] [--out DIR]

TARGET is ``plan`` or ``sync`` (from nothing: a fresh state directory), or
``noop-plan``, ``noop-sync`` or ``status`` (after an unprofiled sync of the
same spec). The command runs in a fresh interpreter on the fake cloud at
zero latency, as ``bench/scale.py`` times it. ``cprofile`` (the default for
plan and status) writes ``DIR/TARGET.prof`` and prints the top functions by
own and by cumulative time; ``py-spy`` (the default for sync when it is
installed: it samples every thread, which cProfile cannot) writes the
collapsed stacks ``DIR/TARGET.txt`` (flamegraph.pl and speedscope read
them) and prints the top functions by own and by inclusive samples.
``--gc off`` runs the command with the garbage collector disabled, to see
what collection costs.
"""

from __future__ import annotations

import argparse
import collections
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from scale import ROOT, Cli, checked, cloudlet_name, parse_size, write_spec

TARGETS = {
    "plan": (["plan", "{spec}"], False),
    "sync": (["sync", "{spec}", "--yes", "--json"], False),
    "noop-plan": (["plan", "{spec}"], True),
    "noop-sync": (["sync", "{spec}", "--yes", "--json"], True),
    "status": (["status", "{name}", "--json"], True),
}
#: The interpreter's arguments that run ``cloudlet`` with the collector off.
NO_GC = [
    "-c",
    "import gc, runpy, sys; gc.disable(); sys.argv[0] = 'cloudlet'; "
    "runpy.run_module('cloudlet', run_name='__main__')",
]


def py_spy() -> str | None:
    return shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))


def cloudlet_argv(gc: str, rest: list[str]) -> list[str]:
    """The interpreter's arguments for ``cloudlet REST``."""
    return [*(NO_GC if gc == "off" else ["-m", "cloudlet"]), *rest]


def with_cprofile(out: Path, gc: str, rest: list[str]) -> list[str]:
    if gc == "off":  # cProfile runs a script: the same one-liner as a file
        script = out.with_suffix(".nogc.py")
        script.write_text(NO_GC[1].replace("; ", "\n") + "\n")
        return [sys.executable, "-m", "cProfile", "-o", str(out), str(script), *rest]
    return [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "cloudlet", *rest]


def show_cprofile(prof: Path, top: int) -> None:
    stats = pstats.Stats(str(prof))
    stats.strip_dirs()
    for key, title in (("tottime", "own time"), ("cumulative", "cumulative time")):
        print(f"\n== top {top} functions by {title} ({prof})")
        stats.sort_stats(key).print_stats(top)


FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _frame(raw: str) -> str:
    """``func (path/to/file.py:123)`` as ``func (file.py)``: one row per function."""
    match = FRAME.match(raw.strip())
    if match is None:
        return raw.strip()
    return f"{match['func']} ({Path(match['file']).name})"


def show_py_spy(collapsed: Path, top: int) -> None:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_frame(f) for f in stack.split(";")]
        total += int(count)
        own[frames[-1]] += int(count)
        for name in set(frames):
            inclusive[name] += int(count)
    for title, counter in (("own", own), ("inclusive", inclusive)):
        print(f"\n== top {top} functions by {title} samples ({total} samples, {collapsed})")
        for name, n in counter.most_common(top):
            print(f"  {n:7d}  {100 * n / max(total, 1):5.1f} %  {name}")


def command(tool: str, result: Path, gc: str, rest: list[str]) -> list[str]:
    if tool == "cprofile":
        return with_cprofile(result, gc, rest)
    spy = ["record", "--format", "raw", "--rate", "200", "-o", str(result), "--"]
    return [str(py_spy()), *spy, sys.executable, *cloudlet_argv(gc, rest)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("--size", default="10k")
    parser.add_argument("--mix", choices=("sized", "wide"), default="sized")
    parser.add_argument("--tool", choices=("cprofile", "py-spy"))
    parser.add_argument("--gc", choices=("on", "off"), default="on")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, help="keep spec, state and profile here")
    parser.add_argument("--tree", type=Path, default=ROOT, help="profile this checkout's cloudlet")
    args = parser.parse_args()
    tool = args.tool or ("py-spy" if py_spy() and "sync" in args.target else "cprofile")
    if tool == "py-spy" and py_spy() is None:
        raise SystemExit(
            "py-spy is not installed (.venv/bin/pip install py-spy); use --tool cprofile"
        )
    out = args.out or Path(tempfile.mkdtemp(prefix="cloudlet-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    cli = Cli.at(args.tree, out / "pyc")
    cli.warm(out / "warm")
    spec = write_spec(out / "spec.yaml", parse_size(args.size), args.mix)
    state = out / f"state-{args.target}"
    shutil.rmtree(state, ignore_errors=True)
    fill = {"spec": str(spec), "name": cloudlet_name(spec)}
    argv, after_sync = TARGETS[args.target]
    if after_sync:
        print(f"syncing {spec} into {state} first (not profiled)")
        log = out / "first-sync.log"
        checked(cli.run(state, ["sync", str(spec), "--yes", "--json"], log), (0,), "sync", log)
    result = out / f"{args.target}.{'prof' if tool == 'cprofile' else 'txt'}"
    rest = ["--state-dir", str(state), *(a.format(**fill) for a in argv)]
    cmd = command(tool, result, args.gc, rest)
    print("profiling:", " ".join(cmd))
    subprocess.run(cmd, cwd=cli.tree, env=cli.env, stdout=subprocess.DEVNULL, check=False)
    (show_py_spy if tool == "py-spy" else show_cprofile)(result, args.top)


if __name__ == "__main__":
    main()
