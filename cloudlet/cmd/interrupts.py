"""Ctrl-C and SIGTERM during ``sync`` and ``destroy``: stop cleanly, or at once.

A provider call cut off mid-way leaves the cloud unsure and the run unheard:
so the first SIGINT or SIGTERM only sets the engine's stop event. The walk
starts nothing new, the calls running finish and are journaled, the engine
records the sync as "interrupted", and the command says how far it got and
exits 130 (SIGINT) or 143 (SIGTERM), the shell's 128 + signal number.

A second signal exits at once (``os._exit``) after showing the cursor that
the progress bar hid. The journal entries of the calls still in flight
stay: the next sync re-observes and adopts by tag what they created.

Before the command arms the guard (while it reads files, plans or asks for
confirmation) nothing runs that needs finishing: a signal ends the command
at once, as Python's default would, but with the right exit status.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any

import attrs

from cloudlet.engine.report import SyncReport, tally

EXIT_CODES: dict[int, int] = {signal.SIGINT: 130, signal.SIGTERM: 143}
SHOW_CURSOR = b"\x1b[?25h"


class Interrupted(KeyboardInterrupt):
    """A signal before anything ran; ``code`` is the exit status it means."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@attrs.define
class Interrupts:
    """Which signal came, and the stop events it sets (see ``caught``)."""

    signum: int | None = None
    _stops: list[threading.Event] = attrs.field(factory=list)
    _cleanups: list[Callable[[], None]] = attrs.field(factory=list)

    def arm(self, stop: threading.Event, cleanup: Callable[[], None] | None = None) -> bool:
        """From now on a signal sets ``stop`` rather than ending the command;
        ``cleanup`` (closing the progress bar) runs when the guard ends. False,
        with ``stop`` set, when a signal came already: start nothing more."""
        self._stops.append(stop)
        if cleanup is not None:
            self._cleanups.append(cleanup)
        if self.signum is not None:
            stop.set()
            return False
        return True

    def disarm(self) -> None:
        """Back to "a signal ends the command at once": for a question asked
        again after an armed run that applied nothing (a changed plan)."""
        self._stops.clear()

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            _exit_now(EXIT_CODES.get(signum, 130))
        if not self._stops:
            raise Interrupted(EXIT_CODES.get(signum, 130))
        self.signum = signum
        for stop in self._stops:
            stop.set()
        again = "Ctrl-C again" if signum == signal.SIGINT else "a second signal"
        _say(f"cloudlet: stopping: letting the running calls finish ({again} exits at once)\n")

    @property
    def code(self) -> int | None:
        """The exit status the signal asks for; None when none came."""
        return None if self.signum is None else EXIT_CODES.get(self.signum, 130)

    def conclude(self, reports: Sequence[SyncReport], resume: str, *, ok: bool) -> int:
        """The command's exit status; after a signal, first the one line that
        says how far it got and what finishes the job."""
        code = self.code
        if code is None:
            return 0 if ok else 1
        print(interrupted_line(reports, resume), file=sys.stderr)
        return code

    def _close(self) -> None:
        for cleanup in self._cleanups:
            cleanup()


def interrupted_line(reports: Sequence[SyncReport], resume: str) -> str:
    """``interrupted: 5 actions done, 20 not started; run `cloudlet sync x.yaml` to finish``."""
    counts = tally(s for r in reports for s in r.steps)
    return f"interrupted: {counts.describe()}; run `{resume}` to finish"


@contextmanager
def caught() -> Iterator[Interrupts]:
    """SIGINT and SIGTERM handled as the module says while the block runs;
    the previous handlers come back, and the armed cleanups run, however it ends."""
    guard = Interrupts()
    previous: dict[int, Any] = {s: signal.signal(s, guard.handle) for s in EXIT_CODES}
    try:
        yield guard
    finally:
        try:
            guard._close()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def _say(text: str) -> None:
    """Best effort from a signal handler: through ``sys.stderr``, which a live
    progress bar redirects above itself; never an exception into the walk."""
    try:
        sys.stderr.write("\n" + text if sys.stderr.isatty() else text)  # off the ^C echo
        sys.stderr.flush()
    except Exception:
        pass


def _exit_now(code: int) -> None:
    """The second signal: show the cursor, say so in one line, and go."""
    try:
        if os.isatty(1):
            os.write(1, SHOW_CURSOR + b"\r\n")
        os.write(
            2,
            b"cloudlet: interrupted again; exiting at once "
            b"(the next sync re-observes what was in flight)\n",
        )
    finally:
        os._exit(code)
