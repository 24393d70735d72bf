"""How plans, sync summaries and status read on a terminal (or a pipe)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cloudlet.engine.report import SyncReport
from cloudlet.model.resources import AttrValue
from cloudlet.planner import Action, Plan
from cloudlet.shepherd.status import ResourceState, Status
from cloudlet.store.records import SyncRecord

SIGILS = {
    "create": ("+", "green"),
    "update": ("~", "yellow"),
    "replace": ("-/+", "magenta"),
    "delete": ("-", "red"),
}


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 step``, ``2 steps``: a count with its noun agreeing (``many`` for
    an irregular plural: ``plural(n, "address", "addresses")``)."""
    return f"{n} {word if n == 1 else many or word + 's'}"


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
        why = escape(explain(action))
        console.print(
            f"  [{colour}]{sigil:>3} {escape(label):<{width}}[/]  [dim]{why}[/]",
            highlight=False,
            markup=True,
        )
    if len(plan.actions) > limit:
        console.print(f"  … and {len(plan.actions) - limit} more (use --json for all)")


def show_value(value: AttrValue) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(value) + "]"
    return "(unset)" if value is None else str(value)


def explain(action: Action) -> str:
    """The action's reason, and for a create what it will be: its key
    attributes, and for a listener the public port clients will use."""
    shown = action.key_attrs()
    if not shown:
        return action.reason
    parts = []
    if {"protocol", "port", "publicPort"} <= set(shown):
        port, public = shown.pop("port"), shown.pop("publicPort")
        remapped = " (remapped)" if public != port else ""
        parts.append(f"{shown.pop('protocol')}/{port} → public port {public}{remapped}")
    parts += [f"{k} {show_value(v)}" for k, v in shown.items()]
    return f"{action.reason}; {', '.join(parts)}"


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
    # The message in brackets unless it only repeats the verdict.
    said = f" ({escape(report.message)})" if report.message not in ("", "converged") else ""
    console.print(
        f"[bold]{report.cloudlet}[/]: {verdict} in {report.wall:.2f} s"
        f"{said}{'; ' + parts if parts else ''}"
    )
    for s in failed:
        tries = plural(s.attempts, "attempt")
        console.print(
            f"  [red]✗ {s.phase} {s.id}[/]: {escape(str(s.error))} (after {tries})",
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
        console.print(f"  last sync: {escape(last_sync_line(last, status.observed_at))}")
    if status.revision_pending:
        synced = f"last synced: revision {last.revision}" if last is not None else "never synced"
        console.print(
            f"  [yellow]pending[/]: desired revision {status.desired_revision} is stored, "
            f"not synced yet ({synced}); run 'cloudlet sync {status.cloudlet}'",
            highlight=False,
        )
    counts = Counter(r.state for r in status.resources)
    console.print("  resources: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    listed = [r for r in status.resources if r.state != "ready"]
    for r in listed[:50]:
        word = "[cyan]pending[/]" if r.state == "pending" else "[yellow]drift[/]"
        console.print(f"    {word} {escape(r.id)}: {escape(resource_detail(r))}", highlight=False)
    if len(listed) > 50:
        console.print(f"    … and {len(listed) - 50} more (use --json for all)")
    if status.port_mappings:
        table = Table("load balancer", "target", "port", "public", box=None, padding=(0, 2))
        for m in status.port_mappings:
            public = f"{m.public_ip or '?'}:{m.public_port}"
            note = "" if m.public_port == m.port else " (remapped)"
            table.add_row(m.load_balancer, m.target, f"{m.protocol}/{m.port}", public + note)
        console.print(table)


def when(at: float, now: float) -> str:
    """A stored time as UTC, and how long before ``now`` it was."""
    stamp = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{stamp} ({ago(max(0.0, now - at))} ago)"


def ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def last_sync_line(last: SyncRecord, now: float) -> str:
    """``converged, revision 3, <time> (<age> ago), 1.2 s``, and its message."""
    said = f" ({last.message})" if last.message and last.message != last.outcome else ""
    revision = f", revision {last.revision}" if last.revision is not None else ""
    return f"{last.outcome}{said}{revision}, {when(last.at, now)}, took {last.wall_seconds} s"


STATE_WORDS = {
    "missing": "missing (the cloud has no such object)",
    "orphan": "not in the desired state (owned, to be deleted)",
    "duplicated": "more than one object carries this id",
}


def resource_detail(r: ResourceState) -> str:
    """What differs: each attribute's actual and desired value."""
    if r.changes:
        return "; ".join(
            f"{c.attr} is {show_value(c.actual)}, desired {show_value(c.desired)}"
            for c in r.changes
        )
    if r.differs:
        return "differs in " + ", ".join(r.differs)
    if r.state == "pending":
        return "to be created" if r.uid is None else "to be deleted"
    return STATE_WORDS.get(r.state, r.state)
