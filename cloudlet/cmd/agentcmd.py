"""``cloudlet lb-agent``: the LB agent (see :mod:`cloudlet.agent.agent`)."""

from __future__ import annotations

import argparse

from cloudlet.agent import cli
from cloudlet.cmd import helptext


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "lb-agent",
        help=cli.DESCRIPTION,
        description=cli.DESCRIPTION,
        epilog=helptext.epilog("lb-agent"),
        formatter_class=helptext.Formatter,
    )
    cli.add_arguments(p)
    p.set_defaults(handler=cli.run)
