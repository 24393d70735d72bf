"""The ``cloudlet`` command: parse arguments, run one command, map errors.

Every error an operator can cause ends as a plain message and an exit
status; a traceback is shown only with ``--verbose`` for genuine bugs.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import NoReturn

from cloudlet import __version__
from cloudlet.cmd import agentcmd, commands, fakecmd, helptext
from cloudlet.errors import CloudletError, SpecError
from cloudlet.logsafety import redact, route_sdk_logs

#: What every log record has; anything else on a record came with ``extra=``.
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: level, logger, message and time, then the
    record's own fields (``cloudlet``, ``id``, ``op``, ``outcome``, ...)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "time": record.created,
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and key not in doc:
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``sys.stderr`` as it is at each line, not as it was at start:
    while a rich progress bar is live, rich points it at its console, which
    prints the line above the bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # under the handler's lock (``handle`` holds it)
        super().emit(record)


def setup_logging(verbose: bool, fmt: str) -> None:
    handler = _StderrHandler()
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger("cloudlet")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    route_sdk_logs(handler)


class Parser(argparse.ArgumentParser):
    """A usage error is an operator mistake like any other: one line naming
    it and where help is, and exit 1 (argparse's 2 is what ``plan`` says
    for "changes pending")."""

    def error(self, message: str) -> NoReturn:
        # The subcommand's own parser names itself: "cloudlet sync: ...".
        where = self.prog.removeprefix("cloudlet").strip()
        said = f"{where}: {message}" if where else message
        self.exit(1, f"cloudlet: {said} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = Parser(
        prog="cloudlet",
        description="Declarative state sync for edge cloudlets.",
        epilog=helptext.ROOT,
        formatter_class=helptext.Formatter,
    )
    p.add_argument("--version", action="version", version=f"cloudlet {__version__}")
    p.add_argument(
        "--state-dir",
        help="embedded store directory (env CLOUDLET_STATE_DIR; "
        "default $XDG_STATE_HOME/cloudlet, else ~/.local/state/cloudlet)",
    )
    p.add_argument("--etcd", help="etcd endpoints HOST:PORT[,...] (env CLOUDLET_ETCD)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument(
        "--log-format", choices=["text", "json"], default="text", help="log lines on stderr"
    )
    # Subparsers (and theirs, as ``fake``'s) are made of the parent's class: Parser.
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.register(sub)
    fakecmd.register(sub)
    agentcmd.register(sub)
    return p


#: Commands that run once and exit (not ``reconcile``, the relays or
#: ``lb-agent``, which run for days).
ONE_SHOT = frozenset(
    {
        *("validate", "plan", "sync", "status", "list", "destroy", "graph", "apply"),
        *("get", "history", "rollback", "export"),
    }
)
#: The collector's thresholds while one runs (Python's are 700, 10, 10).
ONE_SHOT_GC = (50_000, 20, 20)


@contextlib.contextmanager
def one_shot_gc(command: str) -> Iterator[None]:
    """Collect less often while a one-shot command runs, and restore the
    thresholds after. What such a command builds (spec, expansion,
    observation, plan: hundreds of thousands of objects at 10k resources)
    stays alive until it exits, so the collector's passes over it free
    nothing; at the default thresholds they took a quarter of a no-op plan's
    CPU at 10k and grew faster than the plan (issue 13). The collector stays
    on: young cycles (a retried call's traceback) still go within 50,000
    allocations. Long-running commands keep Python's defaults: a daemon's
    garbage must not wait for a full pass this rare."""
    if command not in ONE_SHOT:
        yield
        return
    before = gc.get_threshold()
    gc.set_threshold(*ONE_SHOT_GC)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def report_thread_crashes(verbose: bool) -> None:
    """A thread that dies of an exception (ours or a library's, such as a
    client's stream reader) is logged in one line, traced only on request,
    as the main thread's errors are; Python would print a traceback."""

    def hook(event: threading.ExceptHookArgs) -> None:
        if event.exc_type is SystemExit:
            return
        name = event.thread.name if event.thread is not None else "?"
        logging.getLogger("cloudlet").error(
            "thread %s died: %s: %s",
            name,
            event.exc_type.__name__,
            event.exc_value,
            exc_info=event.exc_value if verbose else None,
        )

    threading.excepthook = hook


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.log_format)
    report_thread_crashes(args.verbose)
    try:
        with one_shot_gc(args.command):
            code: int = args.handler(args)
        return code
    except SpecError as err:
        print(err.render(), file=sys.stderr)
        return 1
    except CloudletError as err:
        print(f"cloudlet: {redact(str(err))}", file=sys.stderr)  # SDK text may hold a URL
        return 1
    except KeyboardInterrupt as err:  # before anything ran (cmd.interrupts)
        lead = "\n" if sys.stderr.isatty() else ""  # off the terminal's ^C
        print(f"{lead}cloudlet: interrupted", file=sys.stderr)
        # cmd.interrupts.Interrupted carries the status its signal means (143 for SIGTERM)
        code = getattr(err, "code", 130)
        return code if isinstance(code, int) else 130
    except BrokenPipeError:
        return 1
    except Exception as err:  # a bug: say so plainly, trace only on request
        if args.verbose:
            raise
        print(
            f"cloudlet: internal error: {type(err).__name__}: {redact(str(err))} "
            "(run with --verbose for details)",
            file=sys.stderr,
        )
        return 1


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
