"""``cloudlet fake``: look at or change the simulated cloud behind the engine's back."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from cloudlet.cmd import helptext
from cloudlet.cmd.context import Context
from cloudlet.errors import NotFound

if TYPE_CHECKING:
    from cloudlet.providers.fake import FakeCloud


def _cloud(args: argparse.Namespace) -> FakeCloud:
    from cloudlet.providers.fake import FakeCloud

    ctx = Context.from_args(args.state_dir, args.etcd)
    return FakeCloud(ctx.state_dir / "fake-cloud.db")


def _known(args: argparse.Namespace) -> None:
    """Refuse a name that is neither at the simulated site nor stored: an
    empty list would read as "synced and then destroyed" for a typo. A
    stored cloudlet not synced yet (after ``apply``) owns nothing, rightly."""
    with Context.from_args(args.state_dir, args.etcd) as ctx:
        if ctx.repo.get_desired(args.name) is None:
            raise NotFound(
                f"the simulated cloud holds nothing for cloudlet {args.name!r}, and no"
                f" desired state is stored for it in {ctx.where}"
            )


def cmd_ls(args: argparse.Namespace) -> int:
    cloud = _cloud(args)
    objs = cloud.list_objects(args.name)
    if not objs:
        _known(args)
    if args.json:
        rows = [
            {
                "uid": o.uid,
                "id": o.id,
                "kind": o.kind,
                "attrs": {k: list(v) if isinstance(v, tuple) else v for k, v in o.attrs.items()},
            }
            for o in objs
        ]
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    for o in objs:
        extra = f" {o.attrs['address']}" if "address" in o.attrs else ""
        print(f"{o.uid:<16} {o.id or '(untagged)':<40}{extra}")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    _cloud(args).remove(args.name, args.id)
    print(f"removed {args.id} from the simulated cloud (out of band)")
    return 0


def cmd_cp(args: argparse.Namespace) -> int:
    copy = _cloud(args).copy(args.name, args.id)
    print(f"copied {args.id} as {copy.uid} (out of band)")
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    key, sep, value = args.assignment.partition("=")
    if not sep or not key:
        print("cloudlet: expected KEY=VALUE", file=sys.stderr)
        return 1
    _cloud(args).set_attr(args.name, args.id, key, value)
    print(f"set {key} on {args.id} (out of band)")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fake = sub.add_parser(
        "fake",
        help="inspect or change the simulated cloud out of band",
        description="inspect or change the simulated cloud (platform type fake) out of band",
        epilog=helptext.epilog("fake"),
        formatter_class=helptext.Formatter,
    )
    fsub = fake.add_subparsers(dest="fake_command", required=True, metavar="ACTION")
    p = fsub.add_parser("ls", help="list the cloudlet's simulated objects")
    p.add_argument("name", metavar="NAME", help="the cloudlet's name")
    p.add_argument("--json", action="store_true", help="print the objects as JSON")
    p.set_defaults(handler=cmd_ls)
    p = fsub.add_parser("rm", help="delete an object (uid or kind/name) out of band")
    p.add_argument("name", metavar="NAME", help="the cloudlet's name")
    p.add_argument("id", metavar="ID", help="the object's uid or kind/name (vm/web-0)")
    p.set_defaults(handler=cmd_rm)
    p = fsub.add_parser("cp", help="duplicate an object (uid or kind/name) out of band")
    p.add_argument("name", metavar="NAME", help="the cloudlet's name")
    p.add_argument("id", metavar="ID", help="the object's uid or kind/name (vm/web-0)")
    p.set_defaults(handler=cmd_cp)
    p = fsub.add_parser("set", help="change an attribute out of band")
    p.add_argument("name", metavar="NAME", help="the cloudlet's name")
    p.add_argument("id", metavar="ID", help="the object's uid or kind/name (vm/web-0)")
    p.add_argument("assignment", metavar="KEY=VALUE", help="the attribute and its new value")
    p.set_defaults(handler=cmd_set)
