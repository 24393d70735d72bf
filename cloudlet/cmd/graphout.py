"""Draw a plan's step graph as DOT, or SVG/PNG through Graphviz's ``dot``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cloudlet.cmd.outfile import check_output, write_output
from cloudlet.errors import CloudletError
from cloudlet.planner import Plan

if TYPE_CHECKING:
    from cloudlet.model.spec import Cloudlet

COLOURS = {"create": "darkgreen", "update": "goldenrod", "delete": "firebrick"}


def pick_cloudlet(cloudlets: Sequence[Cloudlet], name: str | None, path: str) -> Cloudlet:
    """The cloudlet to draw: ``name``'s, or the file's only one. One picture
    is one plan; drawing only the first of several would hide the others."""
    names = ", ".join(c.name for c in cloudlets)
    if name is None:
        if len(cloudlets) > 1:
            raise CloudletError(
                f"{path} holds {len(cloudlets)} cloudlets ({names}); pick one with --cloudlet NAME"
            )
        return cloudlets[0]
    for c in cloudlets:
        if c.name == name:
            return c
    raise CloudletError(f"{path} holds no cloudlet named {name!r} (it holds {names})")


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
