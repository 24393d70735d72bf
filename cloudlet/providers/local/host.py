"""This Linux host's network plumbing, as the ``local`` platform uses it.

Thin, synchronous wrappers around ``ip``, ``nft`` and process start-up; the
provider decides what to build, this module only knows how. Every name it
is given comes from the provider, which derives them from the cloudlet and
the object, so nothing here can reach an interface the project did not make:
the host namespace is touched only by ``add_host_leg``/``del_host_leg``
(one veth and the on-link route of the cloudlet's external range).

iproute2 6.1's ``ip -batch`` does not take ``-n`` per line, so batches run
per namespace (``ip -n NS -batch -``), and namespaces are added one call
each (measured: about 20 ms in a batch, 100 ms one call each).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from cloudlet.errors import ProviderError

#: Every namespace and host link of the platform starts with this.
PREFIX = "cl-"


def run(argv: Sequence[str], *, stdin: str | None = None, check: bool = True) -> str:
    """Run one command; a failure is a permanent ProviderError naming it."""
    proc = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        what = " ".join(argv[:6])
        raise ProviderError(f"{what}: {proc.stderr.strip() or proc.returncode}", transient=False)
    return proc.stdout


def batch(ns: str | None, lines: Iterable[str], *, check: bool = True) -> None:
    """``ip -batch`` of ``lines`` inside ``ns`` (the host when None)."""
    text = "\n".join(lines) + "\n"
    if text.strip():
        run(["ip", *(["-n", ns] if ns else []), "-force", "-batch", "-"], stdin=text, check=check)


def namespaces() -> set[str]:
    out = run(["ip", "-j", "netns", "list"], check=False).strip()
    return {str(n["name"]) for n in json.loads(out or "[]")}


def ensure_namespace(ns: str) -> None:
    """The namespace, up to its loopback; an existing one is kept."""
    if ns not in namespaces():
        run(["ip", "netns", "add", ns])
    batch(ns, ["link set lo up"])


def links(ns: str | None) -> set[str]:
    out = run(["ip", *(["-n", ns] if ns else []), "-j", "link", "show"], check=False).strip()
    return {str(link["ifname"]) for link in json.loads(out or "[]")}


def pids(ns: str) -> list[int]:
    """The processes running inside ``ns``."""
    return [int(p) for p in run(["ip", "netns", "pids", ns], check=False).split()]


def delete_namespace(ns: str) -> None:
    """Stop every process inside, then the namespace (its links go with it)."""
    if ns not in namespaces():
        return
    for pid in pids(ns):
        kill(pid)
    run(["ip", "netns", "del", ns], check=False)


def sysctl(ns: str, key: str, value: str) -> None:
    run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"{key}={value}"])


def nft(ns: str, ruleset: str) -> None:
    """Replace the namespace's ``cloudlet`` nftables table with ``ruleset``."""
    run(["ip", "netns", "exec", ns, "nft", "-f", "-"], stdin=ruleset)


def spawn(ns: str, argv: Sequence[str], log: Path) -> int:
    """Start a daemon in the foreground inside ``ns``, detached from us (it
    outlives the command that started it); returns its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc.pid


def alive(pid: int | None, mark: str) -> bool:
    """Whether ``pid`` runs and is ours (its command line carries ``mark``)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    return mark.encode() in cmdline and status[0] != "Z"


def marked(arg: str) -> list[int]:
    """The live processes one of whose arguments is exactly ``arg`` (a mark
    the provider put on their command line): what runs for an object even
    when no pid of it was recorded, or its namespace was deleted under it."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if arg.encode() in args and not _zombie(int(entry.name)):
            found.append(int(entry.name))
    return found


def kill(pid: int, grace: float = 2.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not Path(f"/proc/{pid}").exists() or _zombie(pid):
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:
        return True


def routes() -> list[str]:
    """The host's IPv4 route destinations."""
    out = run(["ip", "-j", "-4", "route", "show"], check=False).strip()
    return [str(r.get("dst", "")) for r in json.loads(out or "[]")]


def add_host_leg(host_if: str, fabric_ns: str, fabric_if: str, bridge: str, cidr: str) -> None:
    """One veth from the host into the fabric's external bridge; the host end
    gets the range's first address, which gives the on-link route for the
    external range and nothing else (no default route, no NAT)."""
    if host_if not in links(None):
        run(
            [
                "ip",
                "link",
                "add",
                host_if,
                "type",
                "veth",
                "peer",
                "name",
                fabric_if,
                "netns",
                fabric_ns,
            ]
        )
    first = _first_host(cidr)
    batch(None, [f"addr replace {first} dev {host_if}", f"link set {host_if} up"])
    batch(fabric_ns, [f"link set {fabric_if} master {bridge}", f"link set {fabric_if} up"])


def del_host_leg(host_if: str) -> None:
    if host_if in links(None):
        run(["ip", "link", "del", host_if], check=False)


def _first_host(cidr: str) -> str:
    import ipaddress

    net = ipaddress.ip_network(cidr)
    return f"{next(net.hosts())}/{net.prefixlen}"


def in_namespace(pid: int, ns: str) -> bool:
    """Whether ``pid`` runs inside the named namespace ``ns`` (a process left
    in a namespace deleted and made again under the same name does not)."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{ns}").st_ino
    except OSError:
        return False


def marked_pids(mark: str) -> list[int]:
    """Every process on the host whose command line carries ``mark`` (a path
    only the platform uses): what a namespace deleted behind our back may
    still run, out of ``ip netns pids``' sight."""
    found = []
    needle = mark.encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if needle in (entry / "cmdline").read_bytes() and not _zombie(int(entry.name)):
                    found.append(int(entry.name))
    return found
