"""The agent's command line, shared by ``cloudlet lb-agent`` and ``python -m
cloudlet.agent`` (the light entry point a supervisor spawns: it does not
import the engine, the stores or the console renderer)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import NoReturn

from cloudlet.agent.sourcekinds import SOURCE_KINDS, SourceSpecError, parse_source
from cloudlet.logsafety import route_sdk_logs

DESCRIPTION = (
    "run an LB's haproxy, nginx and keepalived from its LB document: "
    "render, validate, reload in place, supervise, report"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    kinds = ", ".join(f"{k}:..." for k in sorted(SOURCE_KINDS))
    p.add_argument(
        "--source", required=True, metavar="KIND:ARG", help=f"where the document is ({kinds})"
    )
    p.add_argument(
        "--runtime-dir", required=True, metavar="DIR", help="configs, pid files, sockets"
    )
    p.add_argument("--report", metavar="FILE", help="where to write the report (DIR/report.json)")
    p.add_argument("--interval", type=float, default=2.0, metavar="SECONDS", help="read period")


def run(args: argparse.Namespace) -> int:
    """Run the agent until SIGTERM; 1 for a command line it cannot use."""
    try:
        source = parse_source(args.source)
    except SourceSpecError as e:
        print(f"cloudlet lb-agent: {e}", file=sys.stderr)
        return 1
    if args.interval <= 0:
        print("cloudlet lb-agent: --interval must be positive", file=sys.stderr)
        return 1
    from cloudlet.agent.agent import Agent, serve  # the parser is built without it

    runtime = Path(args.runtime_dir)
    report = Path(args.report) if args.report else runtime / "report.json"
    logging.getLogger("cloudlet.agent").setLevel(logging.INFO)
    return serve(Agent(source, runtime, report), args.interval)


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 1 in one line, as ``cloudlet``'s do (its parser is
    not imported here: this entry point stays light)."""

    def error(self, message: str) -> NoReturn:
        self.exit(1, f"{self.prog}: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    p = _Parser(prog="cloudlet lb-agent", description=DESCRIPTION)
    add_arguments(p)
    args = p.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("cloudlet").handlers[:] = [handler]
    route_sdk_logs(handler)  # its OpenStack/vSphere sources log through the SDKs
    return run(args)
