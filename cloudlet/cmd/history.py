"""Desired-state revisions: get, history (with diffs), rollback, and export (Heat, onboarding)."""

from __future__ import annotations

import argparse
import difflib
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cloudlet.cmd import onboardcmd
from cloudlet.cmd.context import Context, lock_timeout
from cloudlet.cmd.outfile import write_output
from cloudlet.errors import CloudletError, NotFound

if TYPE_CHECKING:
    from cloudlet.model.spec import Cloudlet


def as_yaml(document: dict[str, Any]) -> str:
    import yaml  # PyYAML loads only for the commands that print YAML

    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def cmd_get(args: argparse.Namespace) -> int:
    with Context.from_args(args.state_dir, args.etcd) as ctx:
        record = ctx.repo.get_desired(args.name)
        if record is None:
            raise NotFound(f"no cloudlet named {args.name!r}")
        sys.stdout.write(f"# revision {record.revision}\n" + as_yaml(record.document))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    with Context.from_args(args.state_dir, args.etcd) as ctx:
        entries = ctx.repo.history(args.name)
        if not entries:
            raise NotFound(f"no history for cloudlet {args.name!r}")
        previous = ""
        for entry in entries:
            when = datetime.fromtimestamp(entry.at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            text = as_yaml(entry.document)
            sys.stdout.write(f"revision {entry.revision}  {when}\n")
            if previous and not args.brief:
                diff = difflib.unified_diff(
                    previous.splitlines(),
                    text.splitlines(),
                    "before",
                    f"revision {entry.revision}",
                    lineterm="",
                )
                sys.stdout.writelines("    " + line + "\n" for line in list(diff)[2:])
            previous = text
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """Store an earlier revision as the desired state; with ``--sync``,
    reconcile it at once (as ``sync NAME`` would)."""
    from cloudlet.engine.desired import store_desired
    from cloudlet.model.codec import structure

    with Context.from_args(args.state_dir, args.etcd) as ctx:
        entry = ctx.repo.get_revision(args.name, args.to)
        if entry is None:
            if ctx.repo.get_desired(args.name) is None and not ctx.repo.history(args.name):
                raise NotFound(f"no cloudlet named {args.name!r} in {ctx.where}")
            raise NotFound(f"cloudlet {args.name!r} has no revision {args.to}")
        cloudlet = structure(entry.document)
        rev = store_desired(ctx.repo, cloudlet, lock_timeout=lock_timeout(), at=time.time())
        then = (
            "syncing it now"
            if args.sync
            else f"run 'cloudlet sync {args.name}' or let the daemon act on it"
        )
        print(
            f"cloudlet {args.name}: desired state set back to revision {args.to} "
            f"(now revision {rev}); {then}",
            flush=True,
        )
        return _sync_now(ctx, cloudlet, rev) if args.sync else 0


def _sync_now(ctx: Context, cloudlet: Cloudlet, revision: int) -> int:
    """Reconcile the revision just stored; the summary as ``sync`` prints it."""
    from rich.console import Console

    from cloudlet.cmd.interrupts import caught
    from cloudlet.cmd.progress import PlainProgress, RichProgress
    from cloudlet.cmd.render import print_sync

    console = Console(highlight=False, soft_wrap=True)
    progress = RichProgress if console.is_terminal else PlainProgress
    engine = ctx.engine(cloudlet, listener=progress(console, show_plan=True))
    with caught() as guard:
        guard.arm(engine.stop, engine.listener.close)
        report = engine.reconcile(cloudlet, revision)
        engine.listener.close()
        print_sync(console, report)
        return guard.conclude([report], f"cloudlet sync {cloudlet.name}", ok=report.converged)


def cmd_export(args: argparse.Namespace) -> int:
    """The file's cloudlets as Heat templates, with the ports the store allocated."""
    if args.format == "gateway":
        from cloudlet.cmd.gatewaycmd import cmd_export_gateway

        if args.file is None:
            raise CloudletError("export gateway needs FILE (the cloudlets' YAML file)")

        return cmd_export_gateway(args)
    for flag, value in (("--run-dir", args.run_dir), ("--stream-module", args.stream_module)):
        if value is not None:
            raise CloudletError(f"{flag} applies to export gateway only")
    import yaml

    from cloudlet.model.expand import expand
    from cloudlet.model.load import load_file
    from cloudlet.providers.openstack.heat import render_heat

    if args.format == "onboard":
        return onboardcmd.cmd_export_onboard(args)
    if args.file is None:
        raise CloudletError("export heat needs FILE (the cloudlets' YAML file)")
    cloudlets = load_file(args.file)
    for c in cloudlets:
        _heat_platform(c)
    vm = onboardcmd.platform_vm(args, len(cloudlets))
    texts = []
    with Context.from_args(args.state_dir, args.etcd) as ctx:
        for c in cloudlets:
            expansion = expand(c, ctx.repo.get_ports(c.name))
            template = render_heat(expansion, c.spec.platform.external_network or "public", vm)
            texts.append(yaml.safe_dump(template, sort_keys=False))
    text = "---\n".join(texts)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        write_output(args.output, text)
    return 0


#: The platforms a Heat template is for: OpenStack, and the simulated cloud,
#: which models OpenStack's networks, routers and floating IPs (its specs are
#: how a template is previewed, and the examples Heat itself validates).
HEAT_PLATFORMS = ("openstack", "fake")


def _heat_platform(cloudlet: Cloudlet) -> None:
    """Refuse a spec for a site Heat cannot build (vSphere, this host): its
    template would be valid, and describe a cloud the site does not have."""
    platform = cloudlet.spec.platform.type
    if platform not in HEAT_PLATFORMS:
        raise CloudletError(
            f"cannot export cloudlet {cloudlet.name} as Heat: its platform is {platform},"
            " and Heat is OpenStack's (platform openstack, or fake to preview one)"
        )


Add = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def register(add: Add) -> None:
    add("get", cmd_get, "print the stored desired state").add_argument(
        "name", metavar="NAME", help="a stored cloudlet's name"
    )
    p = add("history", cmd_history, "desired-state revisions with diffs")
    p.add_argument("name", metavar="NAME", help="a stored cloudlet's name")
    p.add_argument("--brief", action="store_true", help="revisions only, no diffs")
    p = add("rollback", cmd_rollback, "store an earlier revision as the desired state")
    p.add_argument("name", metavar="NAME", help="a stored cloudlet's name")
    p.add_argument(
        "--to", type=int, required=True, metavar="REV", help="the revision to go back to"
    )
    p.add_argument(
        "--sync", action="store_true", help="then reconcile it now, as 'cloudlet sync NAME' does"
    )
    p = add("export", cmd_export, "render the desired state for restricted sites")
    p.add_argument(
        "format",
        choices=["heat", "gateway", "onboard"],
        help="heat (a Heat template), gateway (the gateway's nginx.conf) or onboard"
        " (cloud-init user data for a platform VM)",
    )
    p.add_argument(
        "file", metavar="FILE", nargs="?", help="the cloudlets' YAML file (heat, gateway)"
    )
    p.add_argument("-o", "--output", default="-", help="the template's file (- = stdout)")
    p.add_argument(
        "--run-dir",
        metavar="DIR",
        help="gateway: where nginx keeps its pid and temporary files"
        " (default: /run/cloudlet-gateway)",
    )
    p.add_argument(
        "--stream-module",
        metavar="PATH",
        help="gateway, vsphere: nginx's stream module to load (default:"
        " modules/ngx_stream_module.so; none: built in)",
    )
    onboardcmd.add_flags(p)
