"""A VIP failover on the ``local`` platform, measured from the host: a new
TCP connection (an HTTP ``GET /``) to the VIP every 50 ms while the master
LB VM's namespace is removed out of band. Shared by ``bench/local.py`` and
``scripts/demo_local.py``.

Only behaviour is used: the VIP is the public address ``status --json``
reports, the master is the LB VM whose namespace holds that address (the
VM namespaces are named from the cloudlet's records), and the VM dies the
way a crashed host does: every process in its namespace stopped, then
killed (a plain SIGKILL still lets keepalived's child send priority 0,
pitfall 3 of the data-plane measurements), then the namespace deleted.
Nothing here knows how the LB's daemons are started. Traffic goes only to
the platform's own range (198.18.0.0/15). Needs root.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: The issue's floor for the VIP failover gap (0.45-0.68 s measured with 0.1 s adverts).
FLOOR = 1.5
#: A new connection this often, each given up after TIMEOUT.
INTERVAL, TIMEOUT = 0.05, 0.9
RANGE = ipaddress.ip_network("198.18.0.0/15")

#: Runs in a process of its own (no site-packages, no GIL shared with the
#: one that removes the namespace): one line of JSON per attempt.
PROBE = r"""
import json, socket, sys, threading, time
addr, port = sys.argv[1], int(sys.argv[2])
interval, timeout = float(sys.argv[3]), float(sys.argv[4])
lock, stop = threading.Lock(), threading.Event()

def probe(start):
    ok, who = False, ""
    try:
        with socket.create_connection((addr, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"GET / HTTP/1.0\r\nHost: probe\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        ok = head.split(b"\r\n")[0].split(b" ")[1:2] == [b"200"]
        who = body.decode(errors="replace").split("\n")[0]
    except (OSError, IndexError):
        pass
    with lock:
        try:
            print(json.dumps({"t": start, "ok": ok, "who": who}), flush=True)
        except (BrokenPipeError, ValueError):
            pass

def loop():
    due = time.monotonic()
    while not stop.is_set():
        threading.Thread(target=probe, args=(time.monotonic(),), daemon=True).start()
        due += interval
        time.sleep(max(0.0, due - time.monotonic()))

print("ready", flush=True)
threading.Thread(target=loop, daemon=True).start()
sys.stdin.read()
stop.set()
time.sleep(timeout + 0.2)
"""


@dataclass(frozen=True)
class Shot:
    t: float  # CLOCK_MONOTONIC, system-wide: comparable with this process's clock
    ok: bool
    who: str


class Probe:
    """A new connection to ``addr:port`` every INTERVAL; results stream in."""

    def __init__(self, addr: str, port: int) -> None:
        assert ipaddress.ip_address(addr) in RANGE, addr  # the platform's own addresses only
        self.proc = subprocess.Popen(
            [sys.executable, "-S", "-c", PROBE, addr, str(port), str(INTERVAL), str(TIMEOUT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"
        self.shots: list[Shot] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                with self._lock:
                    self.shots.append(Shot(**json.loads(line)))

    def answered_since(self, t: float) -> int:
        with self._lock:
            return sum(1 for s in self.shots if s.ok and s.t > t)

    def stop(self) -> list[Shot]:
        """Stop probing; every attempt, by start time."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
            self._reader.join(timeout=5)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        return sorted(self.shots, key=lambda s: s.t)


@dataclass(frozen=True)
class Failover:
    gap: float  # the longest time between the starts of two successive answered attempts
    failed: int  # attempts after the loss that got no answer
    attempts: int  # attempts after the loss, in all
    master: str  # the namespace removed
    survivor: str | None  # the namespace holding the VIP afterwards (None: none or several)
    answered_by: frozenset[str]  # the first lines of the answers (the target's resource id)


def holds(ns: str, address: str) -> bool:
    """Whether ``address`` is configured in namespace ``ns`` (False when it is gone)."""
    out = subprocess.run(["ip", "-n", ns, "-j", "addr", "show"], capture_output=True, text=True)
    if out.returncode != 0:
        return False
    return any(
        a.get("local") == address for link in json.loads(out.stdout) for a in link["addr_info"]
    )


def holders(namespaces: list[str], address: str) -> list[str]:
    return [ns for ns in namespaces if holds(ns, address)]


def crash(ns: str) -> None:
    """A VM's sudden death: its processes stopped, killed, its namespace deleted."""
    listed = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    pids = [int(p) for p in listed.stdout.split()]
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
    subprocess.run(["ip", "netns", "del", ns], check=True)


def wait_until(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout:g} s: {what}")
        time.sleep(0.05)


def fail_over(vip: str, port: int, members: list[str]) -> Failover:
    """Probe ``vip:port``, remove the namespace of whichever of ``members``
    holds the VIP, and measure until traffic has resumed."""
    wait_until("one LB VM holds the VIP", lambda: len(holders(members, vip)) == 1)
    (master,) = holders(members, vip)
    probe = Probe(vip, port)
    try:
        wait_until("the VIP answers", lambda: probe.answered_since(0) >= 10)
        lost = time.monotonic()
        crash(master)
        wait_until("traffic resumes", lambda: probe.answered_since(lost) >= 10, timeout=15)
    finally:
        shots = probe.stop()
    ok_at = [s.t for s in shots if s.ok]
    after = [s for s in shots if s.t > lost]
    left = holders([m for m in members if m != master], vip)
    return Failover(
        gap=max(b - a for a, b in itertools.pairwise(ok_at)),
        failed=sum(not s.ok for s in after),
        attempts=len(after),
        master=master,
        survivor=left[0] if len(left) == 1 else None,
        answered_by=frozenset(s.who for s in shots if s.ok),
    )


def lb_member_namespaces(state: Path, name: str, lb: str) -> list[str]:
    """The namespaces of LB ``lb``'s VMs (``vm/<lb>.0``, ``vm/<lb>.1``), from the records."""
    from cloudlet.providers.local.site import Site

    site = Site(state / "local", name)
    return [site.ns(r.uid) for r in site.records.all() if r.id.startswith(f"vm/{lb}.")]
