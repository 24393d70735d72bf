"""Handlers of the DESIGN.md commands, one small function each."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cloudlet.cmd import completion, helptext, relaycmd, schemacmd
from cloudlet.cmd import history as history_cmd
from cloudlet.cmd import reconcile as reconcile_cmd
from cloudlet.cmd.context import Context, lock_timeout
from cloudlet.errors import CloudletError

# The engine, the planner (networkx), the shepherd and rich load inside the
# handlers that use them, the model (cattrs, PyYAML) in load_file: `--version`
# and `--help` load none of them, `validate` only the model.
if TYPE_CHECKING:
    from rich.console import Console

    from cloudlet.engine.sync import SyncListener
    from cloudlet.model.spec import Cloudlet
    from cloudlet.planner import Plan
    from cloudlet.planner.saved import SavedPlan

Handler = Callable[[argparse.Namespace], int]


def load_file(path: str) -> list[Cloudlet]:
    """The cloudlets of the file at ``path`` (:func:`cloudlet.model.load.load_file`)."""
    from cloudlet.model.load import load_file as load

    return load(path)


def out() -> Console:
    from rich.console import Console

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
        print(  # plain: rich would cost validate its start-up (and read [..] as markup)
            f"{path}: valid ({len(cloudlets)} cloudlet{'s' * (len(cloudlets) != 1)}: {names})"
        )
    return 1 if failed else 0


def cmd_plan(args: argparse.Namespace) -> int:
    if args.offline:
        return cmd_plan_offline(args)
    from cloudlet.cmd.render import print_plan
    from cloudlet.cmd.savedplan import write_saved

    cloudlets = load_file(args.file)
    with context(args) as ctx:
        saved = [_saved_plan(ctx, c) for c in cloudlets]
    plans = [plan for plan, _ in saved]
    if args.out is not None:
        write_saved(args.out, [entry for _, entry in saved])
    if args.json:
        docs = [p.to_json() for p in plans]
        emit_json(docs[0] if len(docs) == 1 else docs)
    else:
        for plan in plans:
            print_plan(out(), plan)
    return 0 if all(p.empty for p in plans) else 2


def cmd_plan_offline(args: argparse.Namespace) -> int:
    """``plan --offline NAME|FILE``: against the last stored observation."""
    from cloudlet.cmd import byname

    with context(args) as ctx:
        plans, docs = byname.run_offline(ctx, args.file, args.json, out())
    if args.json:
        emit_json(docs[0] if len(docs) == 1 else docs)
    return 0 if all(p.empty for p in plans) else 2


def _saved_plan(ctx: Context, cloudlet: Cloudlet) -> tuple[Plan, SavedPlan]:
    """The plan, and what a saved plan keeps of it: the desired revision is
    read before the observation, so that a spec stored meanwhile makes the
    saved plan stale rather than slipping past it."""
    from cloudlet.planner.binding import bind
    from cloudlet.planner.saved import SavedPlan, observation_digest

    record = ctx.repo.get_desired(cloudlet.name)
    engine = ctx.engine(cloudlet)
    actual = engine.observe(cloudlet.name)
    plan = engine.plan_against(cloudlet, actual)
    revision = record.revision if record is not None else None
    return plan, SavedPlan(cloudlet, revision, observation_digest(actual), bind(plan))


def _listener(args: argparse.Namespace, *, show_plan: bool = True) -> SyncListener:
    from cloudlet.cmd.progress import PlainProgress, RichProgress
    from cloudlet.engine.sync import QuietListener

    if args.json:
        return QuietListener()
    console = out()
    progress = RichProgress if console.is_terminal else PlainProgress
    return progress(console, show_plan=show_plan)


def _confirm(question: str) -> bool:
    sys.stdout.write(f"{question} [y/N] ")
    sys.stdout.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def cmd_status(args: argparse.Namespace) -> int:
    from cloudlet.cmd import byname

    if args.name is None:
        return cmd_list(args)
    from cloudlet.cmd.render import print_status
    from cloudlet.engine.sync import stored_status
    from cloudlet.shepherd.codec import status_to_json
    from cloudlet.shepherd.metrics import reaches_public_addresses
    from cloudlet.shepherd.probe import probed
    from cloudlet.shepherd.status import build_status

    with context(args) as ctx:
        cloudlet = ctx.stored(args.name)
        engine = ctx.engine(cloudlet)
        expansion = engine.expansion(cloudlet)
        actual = engine.observe(cloudlet.name)
        record = ctx.repo.get_desired(cloudlet.name)
        status = build_status(
            expansion,
            actual,
            at=time.time(),
            last_sync=ctx.repo.get_sync(cloudlet.name),
            previous=stored_status(ctx.repo, cloudlet.name),
            desired_revision=record.revision if record else None,
            synced=byname.synced_expansion(ctx.repo, cloudlet),
        )
        if reaches_public_addresses(engine.provider):
            status = probed(status, stored_status(ctx.repo, cloudlet.name), time.time())
    if args.json:
        emit_json(status_to_json(status))
    else:
        print_status(out(), status)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Every stored cloudlet: revisions, last sync, Ready."""
    from cloudlet.cmd import byname

    with context(args) as ctx:
        rows = byname.run_list(ctx, args.json, out())
    if rows is not None:
        emit_json(rows)
    return 0


def _show_destroy_plan(plan: Plan) -> None:
    """What goes, shown before the question (and with --yes, for the record)."""
    from cloudlet.cmd.render import print_plan

    if plan.empty:
        out().print(f"{plan.cloudlet}: owns nothing at the site; only its stored state goes")
    else:
        print_plan(out(), plan)


def cmd_destroy(args: argparse.Namespace) -> int:
    from cloudlet.cmd.interrupts import caught as caught_signals
    from cloudlet.cmd.render import print_sync
    from cloudlet.planner import DESTROYED, plan_actions

    with context(args) as ctx, caught_signals() as caught:
        cloudlet = ctx.stored(args.name)
        engine = ctx.engine(
            cloudlet, listener=_listener(argparse.Namespace(json=False), show_plan=False)
        )
        owned = engine.observe(cloudlet.name)
        _show_destroy_plan(plan_actions(cloudlet.name, (), owned, unwanted=DESTROYED))
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
    """Draw one cloudlet's plan: the file's only one, or ``--cloudlet``'s.
    An empty plan has no steps to draw: it says so and writes nothing."""
    from cloudlet.cmd.graphout import pick_cloudlet, write_graph

    cloudlet = pick_cloudlet(load_file(args.file), args.cloudlet, args.file)
    with context(args) as ctx:
        plan = ctx.engine(cloudlet).plan(cloudlet)
    if plan.empty:
        print(f"nothing to change for {cloudlet.name}; drawing nothing", file=sys.stderr)
        return 0
    write_graph(plan, args.output)
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    from cloudlet.engine.desired import store_desired

    cloudlets = load_file(args.file)
    with context(args) as ctx:
        for c in cloudlets:
            rev = store_desired(ctx.repo, c, lock_timeout=lock_timeout(), at=time.time())
            out().print(f"cloudlet {c.name}: desired state stored (revision {rev})")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=helptext.epilog(name),
            formatter_class=helptext.Formatter,
        )
        p.set_defaults(handler=handler)
        return p

    add("validate", cmd_validate, "parse and check cloudlet files").add_argument(
        "files", nargs="+", metavar="FILE", help="cloudlet YAML files (several per file allowed)"
    )
    p = add("plan", cmd_plan, "show what sync would do; store nothing")
    p.add_argument(
        "file", metavar="FILE", help="the cloudlets' YAML file (with --offline: or a stored NAME)"
    )
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument(
        "--offline",
        action="store_true",
        help="plan FILE or a stored NAME against the last stored observation, "
        "without reaching the site (says what it cannot know)",
    )
    p.add_argument(
        "-o",
        "--out",
        metavar="PLAN",
        help="also save the plan to PLAN (-o or --out), for cloudlet sync --plan PLAN",
    )
    from cloudlet.cmd import synccmd  # here: it imports this module's helpers

    p = add("sync", synccmd.cmd_sync, "store the desired state, then apply until converged")
    p.add_argument(
        "file",
        metavar="FILE|NAME",
        nargs="?",
        help="a file to store and sync, or a stored cloudlet's name",
    )
    p.add_argument(
        "--plan",
        metavar="PLAN",
        help="apply exactly the plan saved by cloudlet plan FILE -o PLAN, or refuse if stale",
    )
    p.add_argument("--parallelism", type=int, default=10, help="provider calls at once")
    p.add_argument(
        "--json", action="store_true", help="print the sync's report as JSON, no progress"
    )
    p.add_argument(
        "--yes",
        "-y",
        action="store_true",
        help="do not ask; apply the plan current when it starts (--json alone never consents)",
    )
    p = add("status", cmd_status, "observed resources, drift, conditions, port mappings")
    p.add_argument(
        "name", metavar="NAME", nargs="?", help="a stored cloudlet's name (none: as list)"
    )
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p = add("list", cmd_list, "every stored cloudlet: revisions, last sync, Ready")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p = add("destroy", cmd_destroy, "delete everything the cloudlet owns")
    p.add_argument("name", metavar="NAME", help="a stored cloudlet's name")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p = add("graph", cmd_graph, "draw the plan's dependency graph")
    p.add_argument("file", metavar="FILE", help="the cloudlets' YAML file")
    p.add_argument("-o", "--output", default="-", help="out.dot, out.svg or out.png (- = DOT)")
    p.add_argument(
        "--cloudlet",
        metavar="NAME",
        help="which of the file's cloudlets to draw (needed when it holds several)",
    )
    add("apply", cmd_apply, "store the desired state only").add_argument(
        "file", metavar="FILE", help="the cloudlets' YAML file"
    )
    history_cmd.register(add)
    reconcile_cmd.register(add)
    completion.register(add)
    schemacmd.register(add)
    relaycmd.register(add)
