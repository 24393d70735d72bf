"""The relay's site side: the outbound connection through which a site
serves shell and log sessions on its VMs, accepting no inbound connection.

``SiteAgent.run`` keeps one TLS control connection to the relay, registers
the cloudlets of its store and re-sends them every heartbeat (so one
stored later is served, and the relay knows it is alive). A connection
lost (the relay restarted, the network cut) is dialled again after 0.2 s,
doubling to 10 s; a registration that succeeds resets the wait. For each
``open`` the relay sends, a thread dials a data connection for that
session and runs it: a shell (``ip netns exec`` on ``local``, under a
pseudo-terminal when the user has one) or the VM's log (``-f``: followed).

Where a VM is (its namespace, its log) is the platform's business
(``Targets``): on ``local``, ``providers/local/access.py``; OpenStack and
vSphere have none here (README: "Shell and logs").
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pty
import select
import signal
import ssl
import struct
import subprocess
import termios
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from cloudlet.errors import CloudletError, NotFound
from cloudlet.relay import protocol
from cloudlet.relay.protocol import DATA, EOF, ERR, RESIZE, Conn, dial, frame

log = logging.getLogger("cloudlet.relay.site")

BACKOFF_FIRST, BACKOFF_MAX = 0.2, 10.0
SHELL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Access(Protocol):
    @property
    def log(self) -> Path: ...

    def argv(self, cmd: list[str]) -> list[str]: ...


class Targets(Protocol):
    """What the site serves: its cloudlets' names, and where a VM is."""

    def names(self) -> list[str]: ...

    def locate(self, cloudlet: str, vm: str) -> Access: ...


class StoreTargets:
    """The cloudlets of the store, located by their platform."""

    def __init__(self, store: Any, state_dir: Path) -> None:
        from cloudlet.store.records import StateRepo

        self.repo = StateRepo(store)
        self.state_dir = state_dir

    def names(self) -> list[str]:
        return sorted(d.name for d in self.repo.list_desired())

    def locate(self, cloudlet: str, vm: str) -> Access:
        desired = self.repo.get_desired(cloudlet)
        if desired is None:
            raise NotFound(f"no cloudlet named {cloudlet!r} on this site")
        kind = desired.document.get("spec", {}).get("platform", {}).get("type")
        if kind != "local":
            raise CloudletError(
                f"{cloudlet} is on {kind}: shell and logs there need the VM's console or "
                "an in-VM agent, not built yet (README: Shell and logs)"
            )
        from cloudlet.providers.local.access import vm_access

        return vm_access(self.state_dir, cloudlet, vm)


class SiteAgent:
    def __init__(
        self,
        address: tuple[str, int],
        ctx: ssl.SSLContext,
        targets: Targets,
        site_id: str,
        stop: threading.Event | None = None,
    ) -> None:
        self.address, self.ctx, self.targets, self.site_id = address, ctx, targets, site_id
        self.stop = stop or threading.Event()
        #: Set while registered (tests and the daemon's readiness may read it).
        self.connected = threading.Event()

    def run(self) -> None:
        wait = BACKOFF_FIRST
        while not self.stop.is_set():
            try:
                conn = dial(self.address, self.ctx, self._hello("site"))
            except (OSError, CloudletError, protocol.ProtocolError) as err:
                log.info("relay %s:%d not reached (%s); again in %.1f s", *self.address, err, wait)
                self.stop.wait(wait)
                wait = min(wait * 2, BACKOFF_MAX)
                continue
            wait = BACKOFF_FIRST
            log.info("registered with relay %s:%d as %s", *self.address, self.site_id)
            if refused := conn.answer.get("refused"):
                log.warning(
                    "the relay refused to let this site serve %s: its certificate "
                    "does not name them (cloudlet:NAME)",
                    ", ".join(map(str, refused)),
                )
            self.connected.set()
            try:
                self._control(conn)
            except (OSError, protocol.ProtocolError) as err:
                log.info("relay connection lost: %s", err)
            finally:
                self.connected.clear()
                conn.sock.close()

    def _hello(self, role: str) -> dict[str, Any]:
        return {"role": role, "site": self.site_id, "cloudlets": self.targets.names()}

    def _control(self, conn: Conn) -> None:
        beat = time.monotonic() + protocol.HEARTBEAT
        while not self.stop.is_set():
            left = max(0.0, min(beat - time.monotonic(), 0.5))
            if conn.has_data() or select.select([conn], [], [], left)[0]:
                if not conn.fill():
                    raise protocol.ProtocolError("the relay closed the connection")
                while (doc := conn.take_line()) is not None:
                    if "open" in doc:
                        threading.Thread(
                            target=self._session, args=(doc,), daemon=True, name="relay-session"
                        ).start()
            if time.monotonic() >= beat:
                conn.send(protocol.line({"cloudlets": self.targets.names()}))
                beat = time.monotonic() + protocol.HEARTBEAT

    def _session(self, req: dict[str, Any]) -> None:
        try:
            conn = dial(self.address, self.ctx, {"role": "data", "session": req["open"]})
        except (OSError, CloudletError, protocol.ProtocolError) as err:
            log.warning("session %s: no data connection: %s", str(req["open"])[:12], err)
            return
        try:
            serve_session(conn, req, self.targets)
        except (OSError, protocol.ProtocolError) as err:
            log.info("session %s ended: %s", str(req["open"])[:12], err)
        finally:
            conn.sock.close()


def serve_session(conn: Conn, req: dict[str, Any], targets: Targets) -> None:
    try:
        access = targets.locate(req["cloudlet"], req["vm"])
    except CloudletError as err:
        conn.send(frame(ERR, f"cloudlet: {err}\n".encode()) + protocol.exit_frame(1))
        return
    if req["kind"] == "logs":
        status = send_log(conn, access.log, follow=req["follow"])
    elif req["tty"]:
        env = _env(req)
        status = run_tty(conn, access.argv(req["cmd"]), req["rows"], req["cols"], env)
    else:
        status = run_piped(conn, access.argv(req["cmd"]), _env(req))
    if status is not None:
        conn.send(protocol.exit_frame(status))


def _env(req: dict[str, Any]) -> dict[str, str]:
    name = str(req["vm"]).removeprefix("vm/")
    return {
        "PATH": SHELL_PATH,
        "HOME": "/root",
        "TERM": str(req.get("term") or "xterm"),
        "PS1": f"{req['cloudlet']}/{name}# ",
    }


def _status(proc: subprocess.Popen[bytes]) -> int:
    code = proc.wait()
    return 128 - code if code < 0 else code


def _hang_up(proc: subprocess.Popen[bytes]) -> None:
    """The user went away: the session's processes go too."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGHUP)
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _controlling_tty() -> None:  # in the child, after setsid
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def run_tty(conn: Conn, argv: list[str], rows: int, cols: int, env: dict[str, str]) -> int | None:
    """``argv`` under a new pseudo-terminal, its input from the user's DATA
    frames, its output as DATA frames; the status, or None if the user left."""
    master, slave = pty.openpty()
    set_winsize(master, rows, cols)
    proc = subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=slave, env=env,
        start_new_session=True, preexec_fn=_controlling_tty,
    )  # fmt: skip
    os.close(slave)
    try:
        if not _tty_loop(conn, master):
            _hang_up(proc)
            return None
        return _status(proc)
    finally:
        os.close(master)


def _tty_loop(conn: Conn, master: int) -> bool:
    """Until the terminal's output ends (True) or the user leaves (False)."""
    while True:
        watched: list[Any] = [conn, master]
        ready = [conn] if conn.has_data() else select.select(watched, [], [])[0]
        if conn in ready:
            if not conn.fill():
                return False
            for kind, payload in conn.frames():
                if kind == DATA:
                    _write_all(master, payload)
                elif kind == RESIZE:
                    set_winsize(master, *struct.unpack(">HH", payload))
        if master in ready:
            try:
                data = os.read(master, protocol.CHUNK)
            except OSError:  # EIO: every holder of the terminal closed it
                data = b""
            if not data:
                return True
            conn.send(frame(DATA, data))


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def run_piped(conn: Conn, argv: list[str], env: dict[str, str]) -> int | None:
    """``argv`` with pipes (the user has no terminal): stdout as DATA,
    stderr as ERR frames, the user's EOF closes its stdin."""
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=env, start_new_session=True,
    )  # fmt: skip
    assert proc.stdin and proc.stdout and proc.stderr
    outs = {proc.stdout.fileno(): DATA, proc.stderr.fileno(): ERR}
    while outs:
        watched: list[Any] = [conn, *outs]
        ready = [conn] if conn.has_data() else select.select(watched, [], [])[0]
        if conn in ready:
            if not conn.fill():
                _hang_up(proc)
                return None
            _feed(proc, conn.frames())
        for fd in [r for r in ready if r in outs]:
            data = os.read(fd, protocol.CHUNK)
            if data:
                conn.send(frame(outs[fd], data))
            else:
                del outs[fd]
    return _status(proc)


def _feed(proc: subprocess.Popen[bytes], frames: list[tuple[bytes, bytes]]) -> None:
    assert proc.stdin is not None
    for kind, payload in frames:
        with contextlib.suppress(BrokenPipeError, ValueError):
            if kind == DATA:
                proc.stdin.write(payload)
                proc.stdin.flush()
            elif kind == EOF:
                proc.stdin.close()


def send_log(conn: Conn, path: Path, *, follow: bool, poll: float = 0.25) -> int | None:
    """The log's content; with ``follow``, then what is appended, until the
    user leaves (None)."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, after a loop
    except OSError as err:
        conn.send(frame(ERR, f"cloudlet: no log at {path}: {err.strerror}\n".encode()))
        return 1
    with f:
        while True:
            data = f.read(protocol.CHUNK)
            if data:
                conn.send(frame(DATA, data))
                continue
            if not follow:
                return 0
            if conn.has_data() or select.select([conn], [], [], poll)[0]:
                if not conn.fill():
                    return None
                conn.frames()  # nothing a follower sends matters


def agent_thread(agent: SiteAgent) -> threading.Thread:
    """The agent in a daemon thread (``cloudlet reconcile --relay``)."""
    thread = threading.Thread(target=agent.run, daemon=True, name="relay-site")
    thread.start()
    return thread
