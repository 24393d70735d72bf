"""A real 3-member etcd cluster on loopback, for the tests that lose a member.

Built like ``EtcdServer``: the same binary (``find_etcd``), free loopback
ports, one temporary directory. Each member has its own data dir, client and
peer port and log; ``--initial-cluster`` names all three. ``kill`` SIGKILLs
one member (no clean shutdown), ``restart_member`` starts it again on its
ports and data, where it rejoins from its own WAL (the ``--initial-*`` flags
are ignored once a data dir exists).
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from etcd_server import find_etcd, free_port, spawn_etcd


class Member:
    """One member's name, ports, data and process."""

    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.data_dir = root / name
        self.log_path = root / f"{name}.log"
        self.client_port = 0
        self.peer_port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class EtcdCluster:
    """Three etcd members on 127.0.0.1; a member may be killed and restarted."""

    def __init__(self, size: int = 3, binary: Path | None = None) -> None:
        self.binary = binary or find_etcd()
        self.root = Path(tempfile.mkdtemp(prefix="cloudlet-etcd-cluster-"))
        self.token = f"cloudlet-test-{secrets.token_hex(4)}"
        self.members = [Member(self.root, f"m{i}") for i in range(size)]

    # -- addresses ---------------------------------------------------------

    @property
    def endpoints(self) -> str:
        """``HOST:PORT,...`` for ``--etcd``, members in order."""
        return ",".join(m.endpoint for m in self.members)

    def endpoints_from(self, first: int) -> str:
        """The endpoints with member ``first`` listed first (clients try it first)."""
        order = self.members[first:] + self.members[:first]
        return ",".join(m.endpoint for m in order)

    # -- lifecycle ---------------------------------------------------------

    def start(self, timeout: float = 30.0) -> EtcdCluster:
        """Start every member and wait until the cluster has a leader and
        every member answers healthy; fresh ports are retried if one was taken."""
        for _ in range(3):
            for member in self.members:
                member.client_port, member.peer_port = free_port(), free_port()
            for member in self.members:
                self._spawn(member)
            if self._wait_healthy(self.members, timeout):
                return self
            self.stop()
            for member in self.members:
                shutil.rmtree(member.data_dir, ignore_errors=True)
        raise RuntimeError(f"etcd cluster did not become healthy:\n{self.log_tails()}")

    def kill(self, index: int) -> None:
        """SIGKILL member ``index``: no clean shutdown, like a crashed host."""
        member = self.members[index]
        if member.proc is not None:
            member.proc.kill()
            member.proc.wait(10)
        member.proc = None

    def restart_member(self, index: int, timeout: float = 30.0) -> None:
        """Start a stopped member again on its ports and data; wait until healthy."""
        member = self.members[index]
        if member.alive:
            self.kill(index)
        self._spawn(member)
        if not self._wait_healthy([member], timeout):
            raise RuntimeError(f"etcd member {member.name} did not rejoin:\n{member.log_tail()}")

    def stop(self) -> None:
        """SIGKILL every member: a throwaway cluster, and a clean SIGTERM of
        all three takes seconds (the last ones wait for a quorum that is gone)."""
        for i in range(len(self.members)):
            self.kill(i)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # -- inspection ----------------------------------------------------------

    def status(self, index: int) -> dict[str, object] | None:
        """Member ``index``'s ``/v3/maintenance/status`` (JSON gateway), or None."""
        member = self.members[index]
        request = urllib.request.Request(
            f"http://{member.endpoint}/v3/maintenance/status",
            data=b"{}",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as answer:
                doc = json.loads(answer.read())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def leader(self) -> int | None:
        """The index of the leader every live member agrees on, or None
        (during an election, or while a member still follows a dead one)."""
        ids: dict[str, int] = {}
        seen: set[str] = set()
        for i, member in enumerate(self.members):
            if not member.alive:
                continue
            doc = self.status(i)
            header = doc.get("header") if doc else None
            if doc is None or not isinstance(header, dict) or "member_id" not in header:
                return None
            ids[str(header["member_id"])] = i
            seen.add(str(doc.get("leader", "0")))
        if len(seen) != 1:
            return None
        return ids.get(seen.pop())  # None if it is a dead member or "0" (no leader)

    def wait_leader(self, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.leader()
            if found is not None:
                return found
            time.sleep(0.05)
        raise RuntimeError(f"no etcd leader within {timeout} s:\n{self.log_tails()}")

    def log_tails(self) -> str:
        return "\n".join(f"--- {m.name} ({m.log_path})\n{m.log_tail()}" for m in self.members)

    # -- internals -----------------------------------------------------------

    def _spawn(self, member: Member) -> None:
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        member.proc = spawn_etcd(
            self.binary,
            name=member.name,
            data_dir=member.data_dir,
            client_urls=f"http://127.0.0.1:{member.client_port}",
            peer_url=member.peer_url,
            cluster=[
                f"--initial-cluster={initial}",
                "--initial-cluster-state=new",
                f"--initial-cluster-token={self.token}",
            ],
            log_path=member.log_path,
            durable=False,
        )

    def _wait_healthy(self, members: list[Member], timeout: float) -> bool:
        """Every one of ``members`` says healthy (which needs a leader)."""
        deadline = time.monotonic() + timeout
        pending = list(members)
        while pending and time.monotonic() < deadline:
            for member in list(pending):
                if not member.alive:
                    return False  # exited: most likely a port taken meanwhile
                try:
                    url = f"http://{member.endpoint}/health"
                    with urllib.request.urlopen(url, timeout=1) as answer:
                        if b'"health":"true"' in answer.read():
                            pending.remove(member)
                except OSError:
                    pass
            if pending:
                time.sleep(0.05)
        return not pending
