"""The ``cloudlet`` command: parse arguments, run one command, map errors.

Every error an operator can cause ends as a plain message and an exit
status; a traceback is shown only with ``--verbose`` for genuine bugs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from collections.abc import Sequence

from cloudlet import __version__
from cloudlet.cmd import agentcmd, commands, fakecmd
from cloudlet.errors import CloudletError, SpecError

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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cloudlet", description="Declarative state sync for edge cloudlets."
    )
    p.add_argument("--version", action="version", version=f"cloudlet {__version__}")
    p.add_argument("--state-dir", help="embedded store directory (env CLOUDLET_STATE_DIR)")
    p.add_argument("--etcd", help="etcd endpoints HOST:PORT[,...] (env CLOUDLET_ETCD)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--log-format", choices=["text", "json"], default="text")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.register(sub)
    fakecmd.register(sub)
    agentcmd.register(sub)
    return p


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
        code: int = args.handler(args)
        return code
    except SpecError as err:
        print(err.render(), file=sys.stderr)
        return 1
    except CloudletError as err:
        print(f"cloudlet: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cloudlet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as err:  # a bug: say so plainly, trace only on request
        if args.verbose:
            raise
        print(
            f"cloudlet: internal error: {type(err).__name__}: {err} "
            "(run with --verbose for details)",
            file=sys.stderr,
        )
        return 1


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
