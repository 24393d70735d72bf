"""Draw a plan's step graph as DOT, or SVG/PNG through Graphviz's ``dot``."""

from __future__ import annotations

import shutil
import subprocess
import sys

from cloudlet.cmd.outfile import check_output, write_output
from cloudlet.errors import CloudletError
from cloudlet.planner import Plan

COLOURS = {"create": "darkgreen", "update": "goldenrod", "delete": "firebrick"}


def to_dot(plan: Plan) -> str:
    lines = [f'digraph "{plan.cloudlet}" {{', "  rankdir=LR;", "  node [shape=box, fontsize=10];"]
    for key in sorted(plan.graph.nodes):
        phase = key.partition(":")[0]
        lines.append(f'  "{key}" [color={COLOURS.get(phase, "black")}];')
    for a, b in sorted(plan.graph.edges):
        lines.append(f'  "{a}" -> "{b}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_graph(plan: Plan, output: str) -> None:
    dot = to_dot(plan)
    if output == "-" or output.endswith(".dot") or output.endswith(".gv"):
        if output == "-":
            sys.stdout.write(dot)
        else:
            write_output(output, dot)
        return
    fmt = output.rsplit(".", 1)[-1].lower()
    if fmt not in ("svg", "png"):
        raise CloudletError(f"cannot draw {output!r}: use .dot, .svg or .png")
    check_output(output)
    exe = shutil.which("dot")
    if exe is None:
        raise CloudletError(
            "drawing SVG/PNG needs Graphviz's 'dot' (apt-get install graphviz); "
            "-o FILE.dot works without it"
        )
    done = subprocess.run(
        [exe, f"-T{fmt}", "-o", output],
        input=dot.encode(),
        capture_output=True,
        check=False,
        timeout=300,
    )
    if done.returncode != 0:
        raise CloudletError(f"dot failed: {done.stderr.decode(errors='replace').strip()}")
