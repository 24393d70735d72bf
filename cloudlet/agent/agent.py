"""``cloudlet lb-agent``: read the LB document, run what it describes, say so.

Every interval (and at once on SIGHUP) the agent reads its source. When the
text changed it decodes it, renders every daemon's configuration with
:mod:`cloudlet.lb` into its runtime directory as ``*.new`` files, validates
them with the real binaries (``haproxy -c``, ``nginx -t``, ``keepalived
-t``) and only when all of them pass puts them in place and acts:

- a daemon with work that is not running is started;
- a running daemon whose configuration changed is *reloaded*, never
  restarted: established connections survive a listener change and
  keepalived keeps the VIP where it is (a daemon whose file did not change
  is left alone);
- a daemon with no work left is stopped.

A document that does not decode or validate changes nothing: what runs
keeps running, and the report says why the newest document is not applied.
A daemon that dies is started again (:mod:`cloudlet.agent.daemons`). The
report (:mod:`cloudlet.agent.report`) is written atomically after every
change and every interval. SIGTERM stops every daemon and exits 0.

The decisions (:mod:`cloudlet.agent.decide`, the daemons' backoff) are pure
functions of their inputs and an injected clock; what it does to the host
besides its daemons is :mod:`cloudlet.agent.hostops`; :class:`Agent` is the
shell around them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cloudlet.agent import hostops, stats
from cloudlet.agent import report as reports
from cloudlet.agent.daemons import START_ORDER, STOP_ORDER, Clock, Daemon, Spawn, popen
from cloudlet.agent.decide import (
    Actions,
    actions,
    check_argv,
    config_path,
    configs,
    run_argv,
    unbound,
)
from cloudlet.agent.hostops import HostOps
from cloudlet.agent.report import AgentReport, DaemonState, ListenerStats
from cloudlet.agent.sources import Source, SourceError
from cloudlet.lb import LbConfig, runtime_paths
from cloudlet.lb.document import DocumentError, decode, digest

log = logging.getLogger("cloudlet.agent")

#: How long one validation may take.
CHECK_TIMEOUT = 20.0
#: How long after a start or reload the agent waits for every listener's port.
BIND_WAIT = 5.0

Check = Callable[[Sequence[str]], tuple[int, str]]


def run_check(argv: Sequence[str]) -> tuple[int, str]:
    """Run a validation command; its exit status and what it printed."""
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=CHECK_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return 1, str(e)
    return proc.returncode, (proc.stderr + proc.stdout).strip()


def _listener_stats(cfg: LbConfig | None) -> tuple[ListenerStats, ...]:
    """The per-listener figures of what runs (``cloudlet.agent.stats``); none before a config."""
    return () if cfg is None else stats.collect(cfg)


# -- the shell -------------------------------------------------------------------------


class Agent:
    """One LB's agent: its source, its runtime directory, its daemons."""

    def __init__(
        self,
        source: Source,
        runtime_dir: Path,
        report_path: Path,
        *,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
        spawn: Spawn = popen,
        check: Check = run_check,
        host: HostOps | None = None,
        bind_wait: float = BIND_WAIT,
    ) -> None:
        self.source = source
        self.runtime_dir = runtime_dir
        self.report_path = report_path
        self.clock, self.wall, self.spawn, self.check = clock, wall, spawn, check
        self.host = host or HostOps()
        self.bind_wait = bind_wait
        self.text: str | None = None  # the newest text read
        self.latest: str | None = None
        self.cfg: LbConfig | None = None  # the configuration applied
        self.applied: str | None = None
        self.error: str | None = None
        self.daemons: dict[str, Daemon] = {}

    # -- reading and applying ----------------------------------------------------------

    def poll_source(self, retry: bool = False) -> bool:
        """Read the source; apply a changed document (with ``retry``, also a
        refused one again: SIGHUP). Whether anything changed."""
        try:
            text = self.source.read()
        except SourceError as e:
            if self.error != f"source: {e}":
                log.warning("cannot read the document: %s (keeping what runs)", e)
            self.error = f"source: {e}"
            return True
        if text is None or (text == self.text and not (retry and self.error)):
            return False
        self.text, self.latest = text, digest(text)
        try:
            self.apply(text)
        except Exception as e:  # a bug or the host: say so, keep running what runs
            log.exception("applying document %s failed", self.latest)
            self.error = f"internal error applying the document: {type(e).__name__}: {e}"
        return True

    def apply(self, text: str) -> None:
        try:
            cfg = decode(text, str(self.runtime_dir))
        except DocumentError as e:
            self._refuse(f"the document does not decode: {e}")
            return
        wanted = configs(cfg)
        changed = {d for d, body in wanted.items() if hostops.read(config_path(cfg, d)) != body}
        refusal = self._validate(cfg, {d: wanted[d] for d in changed})
        if refusal is not None:
            self._refuse(refusal)
            return
        for d in sorted(changed):
            os.replace(config_path(cfg, d) + ".new", config_path(cfg, d))
        if cfg.vrrp is not None:
            self.host.nonlocal_bind()
        self._act(cfg, actions(wanted, self.daemons, self._alive(), changed))
        self._wait_bound(cfg)
        self.cfg, self.applied, self.error = cfg, self.latest, None
        tcp = sum(li.protocol == "tcp" for li in cfg.listeners)
        log.info(
            "applied document %s: %d TCP and %d UDP listeners, daemons %s",
            self.applied,
            tcp,
            len(cfg.listeners) - tcp,
            ", ".join(wanted) or "none",
        )

    def _refuse(self, why: str) -> None:
        self.error = why
        log.error("%s; still running document %s", why, self.applied)

    def _validate(self, cfg: LbConfig, changed: dict[str, str]) -> str | None:
        """Write each changed configuration as ``FILE.new`` and check it; why
        one is refused (the ``.new`` files removed), or None when all pass."""
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        for d, body in sorted(changed.items()):
            staged = config_path(cfg, d) + ".new"
            Path(staged).write_text(body)
            code, output = self.check(check_argv(cfg, d, staged))
            if code != 0:
                for other in changed:
                    Path(config_path(cfg, other) + ".new").unlink(missing_ok=True)
                tail = " | ".join(output.splitlines()[-3:])
                return f"{d} refuses the configuration (exit {code}): {tail}"
        return None

    def _act(self, cfg: LbConfig, todo: Actions) -> None:
        for d in todo.stop:
            self.daemons.pop(d).stop()
            log.info("stopped %s: no work left", d)
        for d in todo.reload:
            self.daemons[d].reload()
            log.info("reloaded %s (pid %s)", d, self.daemons[d].pid)
        for d in todo.start:
            daemon = self.daemons.get(d)
            if daemon is None:
                prepare = self._dropper(cfg) if d == "keepalived" else None
                daemon = Daemon(
                    d, run_argv(cfg, d), spawn=self.spawn, clock=self.clock, prepare=prepare
                )
                self.daemons[d] = daemon
            daemon.start()
            log.info("started %s (pid %s)", d, daemon.pid)

    def _dropper(self, cfg: LbConfig) -> Callable[[], None]:
        """Before keepalived starts: no VIP left configured by one killed
        hard (it would be a second holder)."""
        vrrp = cfg.vrrp
        return (lambda: self.host.drop_vip(vrrp)) if vrrp is not None else (lambda: None)

    def _alive(self) -> set[str]:
        return {d for d, daemon in self.daemons.items() if daemon.running}

    def _wait_bound(self, cfg: LbConfig) -> None:
        """Until every listener's port is bound (a started or reloaded
        proxy listens), so a report of "applied" means traffic flows;
        bounded, and cut short when a daemon died meanwhile."""
        deadline = self.clock() + self.bind_wait
        while missing := unbound(cfg, self.host.bound()):
            if self.clock() > deadline or self._alive() != set(self.daemons):
                log.warning("not listening after %g s: %s", self.bind_wait, missing)
                return
            time.sleep(0.02)

    # -- supervising -------------------------------------------------------------------

    def supervise(self) -> bool:
        """Notice daemons that died, start those whose delay is over; whether
        anything changed."""
        changed = False
        for name in START_ORDER:
            daemon = self.daemons.get(name)
            verdict = daemon.check() if daemon is not None else "stopped"
            if daemon is None or verdict in ("running", "stopped", "waiting"):
                continue
            changed = True
            if verdict == "died":
                assert daemon.restart_at is not None
                log.warning(
                    "%s (pid %s) exited with %s; starting it again in %.1f s",
                    name,
                    daemon.pid,
                    daemon.exit_code,
                    daemon.restart_at - self.clock(),
                )
            else:
                daemon.start()
                log.info("restarted %s (pid %s)", name, daemon.pid)
        return changed

    def next_due(self) -> float | None:
        """The clock time of the next scheduled restart, if any."""
        due = [d.restart_at for d in self.daemons.values() if d.restart_at is not None]
        return min(due) if due else None

    # -- reporting and stopping --------------------------------------------------------

    def report(self) -> AgentReport:
        return AgentReport(
            lb=self.cfg.name if self.cfg is not None else None,
            applied=self.applied,
            error=self.error,
            at=self.wall(),
            daemons=tuple(
                DaemonState(name, self.daemons[name].pid, self.daemons[name].running)
                for name in START_ORDER
                if name in self.daemons
            ),
            listeners=_listener_stats(self.cfg),
            pid=os.getpid(),
            latest=self.latest,
        )

    def write_report(self) -> None:
        """Atomically: a reader sees the old report or the new, never half."""
        self.report_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.report_path.with_name(f".{self.report_path.name}.{os.getpid()}.tmp")
        tmp.write_text(reports.encode(self.report()))
        os.replace(tmp, self.report_path)

    def stop_all(self) -> None:
        for name in STOP_ORDER:
            daemon = self.daemons.pop(name, None)
            if daemon is not None:
                daemon.stop()
                log.info("stopped %s", name)

    def sweep(self) -> None:
        """Stop daemons a predecessor left running from this runtime
        directory (an agent killed hard): their pid files say which, their
        command lines confirm they are ours."""
        paths = runtime_paths(LbConfig("sweep", (), None, str(self.runtime_dir)))
        for pid_file in (paths.keepalived_pid, paths.haproxy_pid, paths.nginx_pid):
            pid = hostops.pid_in(pid_file)
            if pid is not None and hostops.runs_from(pid, str(self.runtime_dir)):
                log.info("stopping pid %d left from an earlier agent (%s)", pid, pid_file)
                hostops.terminate(pid)


# -- the loop --------------------------------------------------------------------------


def serve(agent: Agent, interval: float) -> int:
    """Run until SIGTERM (or SIGINT): read every ``interval`` seconds and
    on SIGHUP, supervise, report; then stop every daemon and return 0."""
    pending: set[int] = set()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)

    def note(signum: int, _frame: Any) -> None:
        pending.add(signum)

    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(sig, note)
    log.info(
        "lb-agent %d: runtime %s, report %s", os.getpid(), agent.runtime_dir, agent.report_path
    )
    agent.sweep()
    agent.write_report()
    next_read = agent.clock()
    try:
        while not pending & {signal.SIGTERM, signal.SIGINT}:
            now = agent.clock()
            wake = min(t for t in (next_read, agent.next_due()) if t is not None)
            if wake > now and not pending:
                select.select([wake_r], [], [], wake - now)
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 512)
            asked, now = signal.SIGHUP in pending, agent.clock()
            pending.difference_update({signal.SIGHUP, signal.SIGCHLD})
            if pending & {signal.SIGTERM, signal.SIGINT}:
                break
            changed = agent.supervise()
            due = asked or now >= next_read
            if due:
                changed = agent.poll_source(retry=asked) or changed
                next_read = now + interval
            if changed or due:
                agent.write_report()
    finally:
        log.info("stopping: %s", ", ".join(agent.daemons) or "nothing runs")
        agent.stop_all()
        agent.write_report()
    return 0
