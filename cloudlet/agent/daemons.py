"""The agent's daemons as its own child processes: started, reloaded in
place, stopped, and started again when they die.

The agent is each daemon's parent (every daemon runs in the foreground), so
it sees an exit at once and reaps it. A reload is the daemon's own signal
(:data:`RELOAD_SIGNAL`, see :mod:`cloudlet.lb.render`): haproxy's master
hands its listening sockets to a new worker and lets the old one finish its
connections; nginx and keepalived re-read their files with the same pid, so
keepalived keeps the VIP where it is.

A daemon that dies is started again after a bounded, growing delay
(:class:`Backoff`): a daemon that cannot run (a port taken, a bad host) is
not restarted in a tight loop, and one that ran long enough counts as
healthy again. The decisions read an injected clock, so they are tested
without sleeping.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable, Sequence
from typing import Literal, Protocol

import attrs

#: The signal that makes each daemon re-read its configuration without a restart.
RELOAD_SIGNAL: dict[str, signal.Signals] = {
    "haproxy": signal.SIGUSR2,  # master-worker: new worker, old one drains
    "nginx": signal.SIGHUP,
    "keepalived": signal.SIGHUP,
}
#: Start order; stop order is keepalived first, so the VIP moves to a peer
#: (keepalived sends priority 0 on SIGTERM) before the proxies behind it stop.
START_ORDER = ("haproxy", "nginx", "keepalived")
STOP_ORDER = ("keepalived", "haproxy", "nginx")


class Process(Protocol):
    """What the agent needs of a child (``subprocess.Popen`` is one)."""

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...

    def wait(self, timeout: float | None = None) -> int: ...


Spawn = Callable[[Sequence[str]], Process]
Clock = Callable[[], float]


def popen(argv: Sequence[str]) -> Process:
    """A daemon in the foreground: its output is the agent's (one log)."""
    return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL)


@attrs.define
class Backoff:
    """The delay before the next start of a daemon that died: ``first``,
    doubling per death up to ``cap``; a run of ``stable`` seconds or more
    starts the count afresh."""

    first: float = 0.5
    cap: float = 30.0
    stable: float = 30.0
    failures: int = 0

    def after_exit(self, ran_for: float) -> float:
        if ran_for >= self.stable:
            self.failures = 0
        delay: float = min(self.cap, self.first * 2.0**self.failures)
        self.failures += 1
        return delay


Verdict = Literal["running", "died", "due", "waiting", "stopped"]


class Daemon:
    """One supervised daemon: its command line, its process, and while it is
    down, when it may start again. ``prepare`` runs before every start
    (keepalived: drop a VIP a predecessor killed hard left behind)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        spawn: Spawn = popen,
        clock: Clock,
        prepare: Callable[[], None] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.name = name
        self.argv = tuple(argv)
        self.spawn = spawn
        self.clock = clock
        self.prepare = prepare
        self.backoff = backoff or Backoff()
        self.proc: Process | None = None
        self.started_at = 0.0
        #: Set once its death is noticed: when it may start again.
        self.restart_at: float | None = None
        self.exit_code: int | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.prepare is not None:
            self.prepare()
        self.proc = self.spawn(self.argv)
        self.started_at = self.clock()
        self.restart_at = None
        self.exit_code = None

    def reload(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(RELOAD_SIGNAL[self.name])

    def check(self) -> Verdict:
        """Where the daemon stands now: ``died`` the first time its exit is
        seen (the restart is then scheduled), ``due`` once its delay is over
        (the caller starts it), ``waiting`` until then."""
        if self.proc is None:
            return "stopped"
        code = self.proc.poll()
        if code is None:
            return "running"
        now = self.clock()
        if self.restart_at is None:
            self.exit_code = code
            self.restart_at = now + self.backoff.after_exit(now - self.started_at)
            return "died"
        return "due" if now >= self.restart_at else "waiting"

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; reaped either way."""
        proc, self.proc = self.proc, None
        self.restart_at = None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace)
