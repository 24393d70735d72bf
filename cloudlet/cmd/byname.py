"""Working with stored cloudlets by name: ``list``, ``sync NAME``, ``plan --offline``.

An operator who has stored a cloudlet should not need its file again: the
store holds the desired state (with its revision), the engine's last sync
record and, since a reconcile, its last observation. These commands read
those records; only ``sync`` (through the engine) changes anything.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from rich.console import Console
from rich.markup import escape

from cloudlet.cmd.context import Context
from cloudlet.cmd.render import ago, print_plan, when
from cloudlet.engine.sync import stored_status
from cloudlet.errors import NotFound
from cloudlet.model.codec import structure
from cloudlet.model.expand import Expansion, expand
from cloudlet.model.load import load_file
from cloudlet.model.spec import Cloudlet
from cloudlet.model.validate import NAME_RE
from cloudlet.planner import Plan, plan_actions
from cloudlet.store.records import ObservedRecord, StateRepo, SyncRecord

#: What a plan made against a stored observation cannot know.
OFFLINE_UNKNOWNS = (
    "changes made at the site since the observation (drift, objects deleted or added) are not seen",
    "replacements the provider's own rules would force (such as a resize that shrinks a disk) "
    "show as updates",
)


# -- which cloudlets an argument names ------------------------------------------------


def _stored_by_name(arg: str, ctx: Context) -> tuple[Cloudlet, int] | None:
    """The stored cloudlet named ``arg`` and its desired revision, if any."""
    if not NAME_RE.fullmatch(arg):
        return None  # not a cloudlet name (a path, "a/b"): nothing to look up
    record = ctx.repo.get_desired(arg)
    if record is None:
        return None
    return structure(record.document), record.revision


def cloudlets_named(arg: str, ctx: Context) -> list[tuple[Cloudlet, int | None]]:
    """The cloudlets ``arg`` names: a file's (revision None: not stored yet),
    or else the stored cloudlet of that name with its desired revision. A file
    wins over a stored name; an argument that is neither is an error."""
    if os.path.exists(arg):
        return [(c, None) for c in load_file(arg)]
    stored = _stored_by_name(arg, ctx)
    if stored is None:
        raise NotFound(f"no file or stored cloudlet named {arg} in {ctx.where}")
    return [stored]


def cloudlets_for_sync(args: argparse.Namespace, ctx: Context) -> list[tuple[Cloudlet, int | None]]:
    """``sync FILE`` stores then reconciles (revision None); ``sync NAME``
    reconciles the stored desired state at its revision and stores nothing."""
    return cloudlets_named(args.file, ctx)


def synced_expansion(repo: StateRepo, cloudlet: Cloudlet) -> Expansion | None:
    """The expansion of the revision the last sync reconciled, while a newer
    one is stored: what the cloud should look like until the next sync.
    None when there is none, when no newer one is stored (status then reads
    no baseline: expanding the same revision twice cost a 10k status a
    tenth of its time), or it no longer reads as a spec."""
    last = repo.get_sync(cloudlet.name)
    if last is None or last.revision is None:
        return None
    desired = repo.get_desired(cloudlet.name)
    if desired is not None and desired.revision == last.revision:
        return None
    entry = repo.get_revision(cloudlet.name, last.revision)
    if entry is None:
        return None
    try:
        old = structure(entry.document)
    except Exception:  # a revision this version cannot read: no baseline, all is pending
        return None
    return expand(old, repo.get_ports(cloudlet.name))


# -- list -------------------------------------------------------------------------------


def list_rows(repo: StateRepo) -> list[dict[str, Any]]:
    """One row per stored cloudlet: revisions from the desired and sync
    records (what the daemon decides from), Ready from the stored status's
    condition (display only), Pending when the desired revision is newer."""
    rows = []
    for desired in sorted(repo.list_desired(), key=lambda d: d.name):
        last = repo.get_sync(desired.name)
        status = stored_status(repo, desired.name)
        ready = status.condition("Ready") if status is not None else None
        pending = last is None or last.revision != desired.revision
        rows.append(
            {
                "name": desired.name,
                "desiredRevision": desired.revision,
                "syncedRevision": last.revision if last is not None else None,
                "lastSync": _sync_json(last),
                "ready": "False" if pending else (ready.status if ready else "Unknown"),
                "reason": "Pending" if pending else (ready.reason if ready else "NotObserved"),
            }
        )
    return rows


def _sync_json(last: SyncRecord | None) -> dict[str, Any] | None:
    if last is None:
        return None
    return {
        "at": last.at,
        "outcome": last.outcome,
        "message": last.message,
        "revision": last.revision,
    }


def print_list(console: Console, rows: list[dict[str, Any]], where: str, now: float) -> None:
    """kubectl-style columns, padded by hand so that a pipe's narrow default
    width never wraps a row."""
    if not rows:
        console.print(f"no cloudlets stored in {escape(where)}")
        return
    table = [("NAME", "DESIRED", "SYNCED", "LAST SYNC", "OUTCOME", "READY")]
    for row in rows:
        last = row["lastSync"]
        table.append(
            (
                row["name"],
                str(row["desiredRevision"]),
                "-" if row["syncedRevision"] is None else str(row["syncedRevision"]),
                "never" if last is None else when(last["at"], now),
                "-" if last is None else last["outcome"],
                f"{row['ready']} ({row['reason']})",
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        line = "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        console.print(escape(line), highlight=False)


def run_list(ctx: Context, as_json: bool, console: Console) -> list[dict[str, Any]] | None:
    """``cloudlet list`` (and ``status`` with no name): the rows, or None once printed."""
    rows = list_rows(ctx.repo)
    if as_json:
        return rows
    print_list(console, rows, ctx.where, time.time())
    return None


# -- plan --offline ---------------------------------------------------------------------


def offline_plan(repo: StateRepo, cloudlet: Cloudlet, where: str) -> tuple[Plan, ObservedRecord]:
    """The plan against the last stored observation; the provider is never
    asked (so its own replacement rules are not applied: see OFFLINE_UNKNOWNS)."""
    observed = repo.get_observed(cloudlet.name)
    if observed is None:
        raise NotFound(
            f"no stored observation of cloudlet {cloudlet.name} in {where}: run "
            f"'cloudlet sync {cloudlet.name}' once while the site is reachable"
        )
    expansion = expand(cloudlet, repo.get_ports(cloudlet.name))
    return plan_actions(cloudlet.name, expansion.resources, observed.objects), observed


def offline_json(plan: Plan, observed: ObservedRecord, now: float) -> dict[str, Any]:
    doc = plan.to_json()
    doc["offline"] = {
        "observedAt": observed.at,
        "ageSeconds": round(max(0.0, now - observed.at), 3),
        "observedRevision": observed.revision,
        "unknown": list(OFFLINE_UNKNOWNS),
    }
    return doc


def print_offline(console: Console, plan: Plan, observed: ObservedRecord, now: float) -> None:
    rev = f", revision {observed.revision}" if observed.revision is not None else ""
    console.print(
        f"[yellow]offline[/]: planned against the observation of {when(observed.at, now)}{rev},"
        " not the site as it is now",
        highlight=False,
    )
    if plan.empty:
        console.print(f"[bold]{plan.cloudlet}[/]: no changes against that observation")
    else:
        print_plan(console, plan)
    console.print(f"  not known offline (observation {ago(max(0.0, now - observed.at))} old):")
    for line in OFFLINE_UNKNOWNS:
        console.print(f"    - {line}", highlight=False)


def run_offline(
    ctx: Context, arg: str, as_json: bool, console: Console
) -> tuple[list[Plan], list[dict[str, Any]]]:
    """``plan --offline NAME|FILE``: the plans, and their JSON documents when
    ``as_json`` (else each is printed)."""
    now = time.time()
    plans, docs = [], []
    for cloudlet, _ in cloudlets_named(arg, ctx):
        plan, observed = offline_plan(ctx.repo, cloudlet, ctx.where)
        plans.append(plan)
        if as_json:
            docs.append(offline_json(plan, observed, now))
        else:
            print_offline(console, plan, observed, now)
    return plans, docs
