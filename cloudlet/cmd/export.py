"""``cloudlet export heat``: the desired state as a Heat template."""

from __future__ import annotations

import argparse
import sys

import yaml

from cloudlet.cmd.context import Context
from cloudlet.model.expand import expand
from cloudlet.model.load import load_file
from cloudlet.providers.openstack.heat import render_heat


def export_heat(args: argparse.Namespace) -> int:
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
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
    return 0
