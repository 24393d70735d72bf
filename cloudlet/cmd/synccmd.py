"""``cloudlet sync``: store a file's desired state (or take a stored one by
name, or a saved plan), then reconcile it, applying only what was approved.

Three ways in: asked on a terminal (the plan shown binds the sync; a changed
plan is shown and asked again), unasked (no terminal, or ``--yes``: the plan
current when it starts), and ``--plan PLAN`` (exactly the saved plan, or a
refusal naming what moved). Signals are handled by ``cmd.interrupts``.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from cloudlet.cmd.commands import _listener, context, emit_json, out
from cloudlet.cmd.context import lock_timeout
from cloudlet.errors import CloudletError

if TYPE_CHECKING:
    from rich.console import Console

    from cloudlet.cmd.interrupts import Interrupts
    from cloudlet.engine.report import SyncReport
    from cloudlet.engine.sync import Engine
    from cloudlet.model.spec import Cloudlet
    from cloudlet.planner.binding import Binding
    from cloudlet.planner.saved import SavedPlan


def cmd_sync(args: argparse.Namespace) -> int:
    """Store the file's desired state, then reconcile it; or reconcile the
    stored desired state of the cloudlet named (``sync NAME``). On a terminal
    (without ``--yes``) only what the operator approved is applied; with
    ``--plan``, only what the saved plan holds."""
    from cloudlet.cmd import byname
    from cloudlet.cmd.interrupts import caught as caught_signals
    from cloudlet.cmd.render import print_sync
    from cloudlet.cmd.savedplan import read_saved
    from cloudlet.engine.sync import SyncOptions

    asked = _check_flags(args)
    saved = read_saved(args.plan) if args.plan is not None else None
    options = SyncOptions(parallelism=args.parallelism, lock_timeout=lock_timeout())
    reports = []
    with context(args) as ctx, caught_signals() as caught:
        targets: list[tuple[Cloudlet, int | None]]
        if saved is not None:
            targets = [(s.cloudlet, None) for s in saved]
        else:
            targets = byname.cloudlets_for_sync(args, ctx)
        for n, (cloudlet, revision) in enumerate(targets):
            engine = ctx.engine(cloudlet, options)
            report: SyncReport | None
            if asked:  # SIGTERM's handler is installed only once the answer is in
                report = _sync_approved(args, engine, cloudlet, revision, caught)
                if report is None:
                    return 1  # the operator said no
            elif saved is not None:
                report = _sync_saved(args, engine, saved[n], caught)
            else:
                report = _sync_unasked(args, engine, cloudlet, revision, caught)
                if report is None:
                    break  # a signal came: start no other cloudlet
            reports.append(report)
            if not args.json:
                print_sync(out(), report)
    if args.json:
        docs = [r.to_json() for r in reports]
        emit_json(docs[0] if len(docs) == 1 else docs)
    ok = all(r.converged for r in reports)
    resume = f"cloudlet sync {args.file}" if args.file else f"cloudlet sync --plan {args.plan}"
    return caught.conclude(reports, resume, ok=ok)


def _check_flags(args: argparse.Namespace) -> bool:
    """Refuse what no sync can do, in one line; whether it will ask first."""
    if args.parallelism < 1:
        raise CloudletError("--parallelism must be at least 1")
    if args.file is None and args.plan is None:
        raise CloudletError(
            "sync: the following arguments are required: FILE|NAME or --plan PLAN"
            " (see cloudlet sync --help)"
        )
    if args.file is not None and args.plan is not None:
        raise CloudletError(
            "sync: FILE|NAME and --plan PLAN exclude each other (see cloudlet sync --help)"
        )
    asked = sys.stdin.isatty() and not args.yes and args.plan is None
    if args.json and not args.yes and not asked and args.plan is None:
        raise CloudletError(
            "sync --json without a terminal does not ask, and --json is no consent: pass --yes"
        )
    return asked


def _run(
    engine: Engine, cloudlet: Cloudlet, revision: int | None, approved: Binding | None = None
) -> SyncReport:
    """A file's spec (``revision`` None) is stored, then reconciled; a stored
    cloudlet (``sync NAME``) is reconciled at its ``revision``."""
    if revision is None:
        return engine.sync(cloudlet, approved=approved)
    return engine.reconcile(cloudlet, revision, approved=approved)


def _sync_unasked(
    args: argparse.Namespace,
    engine: Engine,
    cloudlet: Cloudlet,
    revision: int | None,
    caught: Interrupts,
) -> SyncReport | None:
    """A sync nobody is asked about (no terminal, or ``--yes``): a file's spec
    is stored, then reconciled; a stored one reconciled at ``revision``.
    None when a signal came before it started."""
    engine.listener = listener = _listener(args)
    if not caught.arm(engine.stop, listener.close):
        return None
    report = _run(engine, cloudlet, revision)
    listener.close()
    return report


def _asking(args: argparse.Namespace) -> Console:
    """Where the plan and the question go: stderr under ``--json``, whose
    stdout is the summary alone."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True, stderr=bool(args.json))


def _ask(console: Console, question: str) -> bool:
    console.file.write(f"{question} [y/N] ")
    console.file.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _sync_approved(
    args: argparse.Namespace,
    engine: Engine,
    cloudlet: Cloudlet,
    revision: int | None,
    caught: Interrupts,
) -> SyncReport | None:
    """Show the plan, ask, apply exactly it; while a fresh plan differs from
    the one approved, show how and ask again. None: the operator said no.
    A file's spec (``revision`` None) is stored first; a stored cloudlet
    (``sync NAME``) is reconciled at its ``revision``."""
    from rich.markup import escape

    from cloudlet.cmd.render import print_plan
    from cloudlet.planner.binding import bind

    console = _asking(args)
    plan = engine.plan(cloudlet)
    print_plan(console, plan)
    while True:
        if not plan.empty and not _ask(console, "Apply these changes?"):
            console.print("cancelled; nothing changed")
            return None
        engine.listener = listener = _listener(args, show_plan=False)
        caught.arm(engine.stop, listener.close)
        report = _run(engine, cloudlet, revision, bind(plan))
        listener.close()
        if report.steps or report.mismatch is None or report.unapproved is None:
            return report
        if caught.code is not None:
            return report  # a signal came: ask nothing more
        caught.disarm()  # nothing applied; a signal at the next question ends it
        console.print(f"[bold]{cloudlet.name}[/]: the plan changed since you approved it:")
        for line in report.mismatch.lines():
            console.print(f"  {escape(line)}", highlight=False)
        plan = report.unapproved
        print_plan(console, plan)


def _sync_saved(
    args: argparse.Namespace, engine: Engine, saved: SavedPlan, caught: Interrupts
) -> SyncReport:
    """Apply the saved plan exactly, or refuse in one line naming what moved."""
    engine.listener = listener = _listener(args)
    caught.arm(engine.stop, listener.close)
    report = engine.sync_saved(saved)
    listener.close()
    if report.stopped == "changed" and not report.steps:
        if report.mismatch is not None:
            moved = f"the observed state of {saved.name} moved: {report.mismatch.summary()}"
        else:
            moved = report.message.removesuffix("; nothing applied")
        raise CloudletError(
            f"saved plan {args.plan} is stale ({moved}); nothing applied;"
            " make a new one with cloudlet plan FILE -o PLAN"
        )
    return report
