"""Handlers of the DESIGN.md commands, one small function each."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import attrs
from rich.console import Console

from cloudlet.cmd import history as history_cmd
from cloudlet.cmd import interrupts
from cloudlet.cmd import reconcile as reconcile_cmd
from cloudlet.cmd.context import Context, lock_timeout
from cloudlet.cmd.graphout import write_graph
from cloudlet.cmd.progress import PlainProgress, RichProgress
from cloudlet.cmd.render import print_plan, print_status, print_sync
from cloudlet.engine.desired import store_desired
from cloudlet.engine.sync import QuietListener, SyncListener, SyncOptions, stored_status
from cloudlet.errors import CloudletError
from cloudlet.model.load import load_file
from cloudlet.shepherd.codec import status_to_json
from cloudlet.shepherd.metrics import reaches_public_addresses
from cloudlet.shepherd.probe import probed
from cloudlet.shepherd.status import build_status

Handler = Callable[[argparse.Namespace], int]


def out() -> Console:
    return Console(highlight=False, soft_wrap=True)


def context(args: argparse.Namespace) -> Context:
    return Context.from_args(args.state_dir, args.etcd)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def cmd_validate(args: argparse.Namespace) -> int:
    failed = False
    for path in args.files:
        try:
            cloudlets = load_file(path)
        except CloudletError as err:
            print(err.render() if hasattr(err, "render") else f"{path}: {err}", file=sys.stderr)
            failed = True
            continue
        names = ", ".join(c.name for c in cloudlets)
        out().print(
            f"{path}: valid ({len(cloudlets)} cloudlet{'s' * (len(cloudlets) != 1)}: {names})"
        )
    return 1 if failed else 0


def cmd_plan(args: argparse.Namespace) -> int:
    cloudlets = load_file(args.file)
    with context(args) as ctx:
        plans = [ctx.engine(c).plan(c) for c in cloudlets]
    if args.json:
        docs = [p.to_json() for p in plans]
        emit_json(docs[0] if len(docs) == 1 else docs)
    else:
        for plan in plans:
            print_plan(out(), plan)
    return 0 if all(p.empty for p in plans) else 2


def _listener(args: argparse.Namespace, *, show_plan: bool = True) -> SyncListener:
    if args.json:
        return QuietListener()
    console = out()
    progress = RichProgress if console.is_terminal else PlainProgress
    return progress(console, show_plan=show_plan)


def _confirm(question: str) -> bool:
    sys.stdout.write(f"{question} [y/N] ")
    sys.stdout.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def cmd_sync(args: argparse.Namespace) -> int:
    """Store the file's desired state, then reconcile it."""
    cloudlets = load_file(args.file)
    if args.parallelism < 1:
        raise CloudletError("--parallelism must be at least 1")
    options = SyncOptions(parallelism=args.parallelism, lock_timeout=lock_timeout())
    reports = []
    with context(args) as ctx, interrupts.caught() as caught:
        for cloudlet in cloudlets:
            engine = ctx.engine(cloudlet, options)
            asked = sys.stdin.isatty() and not args.yes and not args.json
            if asked:
                plan = engine.plan(cloudlet)
                print_plan(out(), plan)
                if not plan.empty and not _confirm("Apply these changes?"):
                    out().print("cancelled; nothing changed")
                    return 1
            engine.listener = listener = _listener(args, show_plan=not asked)
            if not caught.arm(engine.stop, listener.close):
                break  # a signal came: start no other cloudlet
            report = engine.sync(cloudlet)  # store, then reconcile
            listener.close()
            reports.append(report)
            if not args.json:
                print_sync(out(), report)
    if args.json:
        docs = [r.to_json() for r in reports]
        emit_json(docs[0] if len(docs) == 1 else docs)
    ok = all(r.converged for r in reports)
    return caught.conclude(reports, f"cloudlet sync {args.file}", ok=ok)


def cmd_status(args: argparse.Namespace) -> int:
    with context(args) as ctx:
        cloudlet = ctx.stored(args.name)
        engine = ctx.engine(cloudlet)
        expansion = engine.expansion(cloudlet)
        actual = engine.observe(cloudlet.name)
        status = build_status(
            expansion,
            actual,
            at=time.time(),
            last_sync=ctx.repo.get_sync(cloudlet.name),
            previous=stored_status(ctx.repo, cloudlet.name),
        )
        if reaches_public_addresses(engine.provider):
            status = probed(status, stored_status(ctx.repo, cloudlet.name), time.time())
        record = ctx.repo.get_desired(cloudlet.name)
        status = attrs.evolve(status, desired_revision=record.revision if record else None)
    if args.json:
        emit_json(status_to_json(status))
    else:
        print_status(out(), status)
    return 0


def cmd_destroy(args: argparse.Namespace) -> int:
    with context(args) as ctx, interrupts.caught() as caught:
        cloudlet = ctx.stored(args.name)
        engine = ctx.engine(cloudlet, listener=_listener(argparse.Namespace(json=False)))
        if not args.yes:
            if not sys.stdin.isatty():
                raise CloudletError(
                    "destroy deletes every object of the cloudlet; pass --yes to confirm"
                )
            if not _confirm(f"Delete everything cloudlet {args.name} owns?"):
                return 1
        caught.arm(engine.stop, engine.listener.close)
        report = engine.destroy(cloudlet.name)  # forgets the desired state once all is gone
        print_sync(out(), report)
    return caught.conclude([report], f"cloudlet destroy {args.name}", ok=report.converged)


def cmd_graph(args: argparse.Namespace) -> int:
    cloudlets = load_file(args.file)
    with context(args) as ctx:
        plan = ctx.engine(cloudlets[0]).plan(cloudlets[0])
    write_graph(plan, args.output)
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    cloudlets = load_file(args.file)
    with context(args) as ctx:
        for c in cloudlets:
            rev = store_desired(ctx.repo, c, lock_timeout=lock_timeout(), at=time.time())
            out().print(f"cloudlet {c.name}: desired state stored (revision {rev})")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    add("validate", cmd_validate, "parse and check cloudlet files").add_argument(
        "files", nargs="+", metavar="FILE"
    )
    p = add("plan", cmd_plan, "show what sync would do; store nothing")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true")
    p = add("sync", cmd_sync, "store the desired state, then apply until converged")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--parallelism", type=int, default=10)
    p.add_argument("--json", action="store_true")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p = add("status", cmd_status, "observed resources, drift, conditions, port mappings")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--json", action="store_true")
    p = add("destroy", cmd_destroy, "delete everything the cloudlet owns")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--yes", "-y", action="store_true")
    p = add("graph", cmd_graph, "draw the plan's dependency graph")
    p.add_argument("file", metavar="FILE")
    p.add_argument("-o", "--output", default="-", help="out.dot, out.svg or out.png (- = DOT)")
    add("apply", cmd_apply, "store the desired state only").add_argument("file", metavar="FILE")
    history_cmd.register(add)
    reconcile_cmd.register(add)
