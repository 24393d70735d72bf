"""Desired-state revisions: get, history (with diffs), rollback, and export as Heat."""

from __future__ import annotations

import argparse
import difflib
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import yaml

from cloudlet.cmd.context import Context, lock_timeout
from cloudlet.cmd.outfile import write_output
from cloudlet.engine.desired import store_desired
from cloudlet.errors import NotFound
from cloudlet.model.codec import structure
from cloudlet.model.expand import expand
from cloudlet.model.load import load_file
from cloudlet.providers.openstack.heat import render_heat


def as_yaml(document: dict[str, Any]) -> str:
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
    with Context.from_args(args.state_dir, args.etcd) as ctx:
        entry = ctx.repo.get_revision(args.name, args.to)
        if entry is None:
            if ctx.repo.get_desired(args.name) is None and not ctx.repo.history(args.name):
                raise NotFound(f"no cloudlet named {args.name!r} in {ctx.where}")
            raise NotFound(f"cloudlet {args.name!r} has no revision {args.to}")
        cloudlet = structure(entry.document)
        rev = store_desired(ctx.repo, cloudlet, lock_timeout=lock_timeout(), at=time.time())
        print(
            f"cloudlet {args.name}: desired state set back to revision {args.to} "
            f"(now revision {rev}); run 'cloudlet sync' or let the daemon act on it"
        )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """The file's cloudlets as Heat templates, with the ports the store allocated."""
    cloudlets = load_file(args.file)
    texts = []
    with Context.from_args(args.state_dir, args.etcd) as ctx:
        for c in cloudlets:
            expansion = expand(c, ctx.repo.get_ports(c.name))
            template = render_heat(expansion, c.spec.platform.external_network or "public")
            texts.append(yaml.safe_dump(template, sort_keys=False))
    text = "---\n".join(texts)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        write_output(args.output, text)
    return 0


Add = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def register(add: Add) -> None:
    add("get", cmd_get, "print the stored desired state").add_argument("name", metavar="NAME")
    p = add("history", cmd_history, "desired-state revisions with diffs")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--brief", action="store_true", help="revisions only, no diffs")
    p = add("rollback", cmd_rollback, "store an earlier revision as the desired state")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--to", type=int, required=True, metavar="REV")
    p = add("export", cmd_export, "render the desired state for restricted sites")
    p.add_argument("format", choices=["heat"])
    p.add_argument("file", metavar="FILE")
    p.add_argument("-o", "--output", default="-")
