"""What the LB agent does to the host it runs on besides its daemons (its LB
VM, or namespace): the VIP's nonlocal bind, dropping a VIP a killed
keepalived left, the bound ports, processes an earlier agent left. Injected
into :class:`~cloudlet.agent.agent.Agent` (:class:`HostOps`), so unit tests
touch no host."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Collection
from pathlib import Path

import attrs

from cloudlet.lb import Vrrp

log = logging.getLogger("cloudlet.agent")


@attrs.frozen
class HostOps:
    """What the agent does to the host it runs on besides its daemons (its
    LB VM, or namespace): injected, so unit tests touch no host."""

    #: Let the proxies bind the VIP where it is not held.
    nonlocal_bind: Callable[[], None] = attrs.field(factory=lambda: allow_nonlocal_bind)
    #: Drop the VIP before keepalived starts.
    drop_vip: Callable[[Vrrp], None] = attrs.field(factory=lambda: drop_vip)
    #: (protocol, port) of every bound socket.
    bound: Callable[[], Collection[tuple[str, int]]] = attrs.field(factory=lambda: bound_ports)


def read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def allow_nonlocal_bind() -> None:
    """The proxies bind the VIP on the member that does not hold it."""
    try:
        Path("/proc/sys/net/ipv4/ip_nonlocal_bind").write_text("1\n")
    except OSError as e:
        log.warning("cannot set net.ipv4.ip_nonlocal_bind: %s", e)


def drop_vip(vrrp: Vrrp) -> None:
    """Remove the VIP from its interface here (if it is configured)."""
    argv = ["ip", "addr", "del", vrrp.vip, "dev", vrrp.interface]
    subprocess.run(argv, capture_output=True, check=False)


def bound_ports() -> set[tuple[str, int]]:
    """(protocol, port) of every listening TCP and bound UDP socket here."""
    out: set[tuple[str, int]] = set()
    for proto, state in (("tcp", "0A"), ("udp", "07")):
        for table in (f"/proc/net/{proto}", f"/proc/net/{proto}6"):
            for line in (read(table) or "").splitlines()[1:]:
                fields = line.split()
                if len(fields) > 3 and fields[3] == state:
                    out.add((proto, int(fields[1].rsplit(":", 1)[1], 16)))
    return out


def pid_in(path: str) -> int | None:
    text = read(path)
    try:
        return int(text.split()[0]) if text else None
    except ValueError:
        return None


def runs_from(pid: int, runtime_dir: str) -> bool:
    try:
        return runtime_dir.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def terminate(pid: int, grace: float = 5.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
