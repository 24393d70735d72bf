"""Handlers of the DESIGN.md commands, one small function each."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cloudlet.cmd import completion, helptext, schemacmd
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


def cmd_plan_offline(args: argparse.Namespace) -> int:
    """``plan --offline NAME|FILE``: against the last stored observation."""
    from cloudlet.cmd import byname

    with context(args) as ctx:
        plans, docs = byname.run_offline(ctx, args.file, args.json, out())
    if args.json:
        emit_json(docs[0] if len(docs) == 1 else docs)
    return 0 if all(p.empty for p in plans) else 2


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


def _install_sigterm(stop: Any) -> None:
    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)


def cmd_sync(args: argparse.Namespace) -> int:
    """Store the file's desired state, then reconcile it; or reconcile the
    stored desired state of the cloudlet named (``sync NAME``)."""
    from cloudlet.cmd import byname
    from cloudlet.cmd.render import print_plan, print_sync
    from cloudlet.engine.sync import SyncOptions

    if args.parallelism < 1:
        raise CloudletError("--parallelism must be at least 1")
    options = SyncOptions(parallelism=args.parallelism, lock_timeout=lock_timeout())
    reports = []
    with context(args) as ctx:
        for cloudlet, revision in byname.cloudlets_for_sync(args, ctx):
            engine = ctx.engine(cloudlet, options)
            asked = sys.stdin.isatty() and not args.yes and not args.json
            if asked:
                plan = engine.plan(cloudlet)
                print_plan(out(), plan)
                if not plan.empty and not _confirm("Apply these changes?"):
                    out().print("cancelled; nothing changed")
                    return 1
            engine.listener = listener = _listener(args, show_plan=not asked)
            _install_sigterm(engine.stop)
            if revision is None:
                report = engine.sync(cloudlet)  # store, then reconcile
            else:
                report = engine.reconcile(cloudlet, revision)  # stored already
            listener.close()
            reports.append(report)
            if not args.json:
                print_sync(out(), report)
    if args.json:
        docs = [r.to_json() for r in reports]
        emit_json(docs[0] if len(docs) == 1 else docs)
    return 0 if all(r.converged for r in reports) else 1


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
    from cloudlet.cmd.render import print_sync
    from cloudlet.planner import plan_actions

    with context(args) as ctx:
        cloudlet = ctx.stored(args.name)
        engine = ctx.engine(
            cloudlet, listener=_listener(argparse.Namespace(json=False), show_plan=False)
        )
        _show_destroy_plan(plan_actions(cloudlet.name, (), engine.observe(cloudlet.name)))
        if not args.yes:
            if not sys.stdin.isatty():
                raise CloudletError(
                    "destroy deletes every object of the cloudlet; pass --yes to confirm"
                )
            if not _confirm(f"Delete everything cloudlet {args.name} owns?"):
                return 1
        _install_sigterm(engine.stop)
        report = engine.destroy(cloudlet.name)  # forgets the desired state once all is gone
        print_sync(out(), report)
    return 0 if report.converged else 1


def cmd_graph(args: argparse.Namespace) -> int:
    from cloudlet.cmd.graphout import write_graph

    cloudlets = load_file(args.file)
    with context(args) as ctx:
        plan = ctx.engine(cloudlets[0]).plan(cloudlets[0])
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
    p = add("sync", cmd_sync, "store the desired state, then apply until converged")
    p.add_argument(
        "file", metavar="FILE|NAME", help="a file to store and sync, or a stored cloudlet's name"
    )
    p.add_argument("--parallelism", type=int, default=10, help="provider calls at once")
    p.add_argument(
        "--json", action="store_true", help="print the sync's report as JSON, no progress"
    )
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
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
    add("apply", cmd_apply, "store the desired state only").add_argument(
        "file", metavar="FILE", help="the cloudlets' YAML file"
    )
    history_cmd.register(add)
    reconcile_cmd.register(add)
    completion.register(add)
    schemacmd.register(add)
