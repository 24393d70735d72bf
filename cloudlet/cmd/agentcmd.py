"""``cloudlet lb-agent``: the LB agent (see :mod:`cloudlet.agent.agent`)."""

from __future__ import annotations

import argparse

from cloudlet.agent import cli


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("lb-agent", help=cli.DESCRIPTION, description=cli.DESCRIPTION)
    cli.add_arguments(p)
    p.set_defaults(handler=cli.run)
