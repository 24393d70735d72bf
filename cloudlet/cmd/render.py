"""How plans, sync summaries and status read on a terminal (or a pipe)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cloudlet.engine.report import SyncReport
from cloudlet.planner import Action, Plan
from cloudlet.shepherd.status import Status

SIGILS = {
    "create": ("+", "green"),
    "update": ("~", "yellow"),
    "replace": ("-/+", "magenta"),
    "delete": ("-", "red"),
}


def plan_summary(plan: Plan) -> str:
    c = plan.counts()
    return (
        f"{c['create']} to create, {c['update']} to update, "
        f"{c['replace']} to replace, {c['delete']} to delete"
    )


def print_plan(console: Console, plan: Plan, *, limit: int = 400) -> None:
    if plan.empty:
        console.print(f"[bold]{plan.cloudlet}[/]: no changes; the cloudlet matches its spec.")
        return
    console.print(f"[bold]{plan.cloudlet}[/]: {plan_summary(plan)}")
    shown = plan.actions[:limit]
    labels = _labels(shown)
    width = max(len(label) for label in labels)
    for action, label in zip(shown, labels, strict=True):
        sigil, colour = SIGILS[action.op]
        console.print(
            f"  [{colour}]{sigil:>3} {escape(label):<{width}}[/]  [dim]{escape(action.reason)}[/]",
            highlight=False,
            markup=True,
        )
    if len(plan.actions) > limit:
        console.print(f"  … and {len(plan.actions) - limit} more (use --json for all)")


def _labels(actions: Sequence[Action]) -> list[str]:
    """Each action's id, as ``id@uid`` where several act on copies of one id
    (an update and the deletes of its duplicates): which copy each one is."""
    many = {rid for rid, n in Counter(a.id for a in actions).items() if n > 1}
    return [f"{a.id}@{a.uid}" if a.id in many and a.uid else a.id for a in actions]


PAST = {"create": "created", "update": "updated", "replace": "replaced", "delete": "deleted"}


VERDICTS = {
    "converged": "[green]converged[/]",
    "interrupted": "[yellow]interrupted[/]",
    "failed": "[red]FAILED[/]",
}


def print_sync(console: Console, report: SyncReport) -> None:
    """The verdict and what was done; each failure; then what a failure
    blocked. Steps a stop left unstarted are counted in the message, not
    listed as blocked: nothing failed them."""
    done = Counter(
        s.op
        for s in report.steps
        if s.outcome == "ok" and (s.op != "replace" or s.phase == "create")
    )
    failed = [s for s in report.steps if s.outcome == "failed"]
    blocked = [s for s in report.steps if s.outcome == "blocked"]
    verdict = VERDICTS[report.record_outcome]
    parts = ", ".join(f"{n} {PAST[op]}" for op, n in sorted(done.items()))
    console.print(
        f"[bold]{report.cloudlet}[/]: {verdict} in {report.wall:.2f} s"
        f" ({escape(report.message)}){'; ' + parts if parts else ''}"
    )
    for s in failed:
        console.print(
            f"  [red]✗ {s.phase} {s.id}[/]: {escape(str(s.error))} (after {s.attempts} attempts)",
            highlight=False,
        )
    if blocked:
        names = ", ".join(s.id for s in blocked[:8])
        more = f" and {len(blocked) - 8} more" if len(blocked) > 8 else ""
        console.print(
            f"  [yellow]⏸ {len(blocked)} blocked by failures:[/] {names}{more}", highlight=False
        )


def print_status(console: Console, status: Status) -> None:
    console.print(f"[bold]cloudlet {status.cloudlet}[/]")
    for cond in status.conditions:
        healthy = cond.ok != (cond.type == "Degraded")
        mark = "[green]✓[/]" if healthy else "[red]✗[/]"
        detail = f": {escape(cond.message)}" if cond.message else ""
        console.print(f"  {mark} {cond.type:<9} {escape(cond.reason)}{detail}", highlight=False)
    last = status.last_sync
    if last is not None:
        said = f" ({escape(last.message)})" if last.message and last.message != last.outcome else ""
        console.print(f"  last sync: {last.outcome}{said}, {last.wall_seconds} s")
    counts = Counter(r.state for r in status.resources)
    console.print("  resources: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    for rid in status.drift[:50]:
        console.print(f"    [yellow]drift[/] {rid}", highlight=False)
    if status.port_mappings:
        table = Table("load balancer", "target", "port", "public", box=None, padding=(0, 2))
        for m in status.port_mappings:
            public = f"{m.public_ip or '?'}:{m.public_port}"
            note = "" if m.public_port == m.port else " (remapped)"
            table.add_row(m.load_balancer, m.target, f"{m.protocol}/{m.port}", public + note)
        console.print(table)
