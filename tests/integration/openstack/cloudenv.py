"""Where the OpenStack integration-test cloud is, and starting it when it is not up.

The cloud is built and run by ``cloud.sh`` next to this file (as root; about 1 min when the Debian
packages are installed, 3.5 min cold).  ``OSCI_DIR`` (default ``/var/tmp/cloudlet-osci``) and
``OSCI_PORT_OFFSET`` come from the environment, for this module and ``cloud.sh`` alike.
"""

from __future__ import annotations

import collections
import os
import pathlib
import subprocess
import sys
import threading

CLOUD_SH = pathlib.Path(__file__).resolve().with_name("cloud.sh")
DEFAULT_OSCI_DIR = "/var/tmp/cloudlet-osci"


def osci_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("OSCI_DIR") or DEFAULT_OSCI_DIR)


def clouds_yaml() -> pathlib.Path:
    """$OSCI_DIR/clouds.yaml (clouds ``osci-admin``, ``osci-demo``), for OS_CLIENT_CONFIG_FILE."""
    return osci_dir() / "clouds.yaml"


def is_up(timeout: float = 120) -> bool:
    """``cloud.sh status``: every daemon of the cloud alive and its APIs answer as osci-demo."""
    try:
        r = subprocess.run(
            ["bash", str(CLOUD_SH), "status"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0


def ensure_cloud_up(timeout: float = 1800) -> pathlib.Path:
    """Start the test cloud with ``cloud.sh up`` unless it is healthy already; return clouds.yaml.

    The output of ``cloud.sh`` goes to stderr as it comes.  Raises RuntimeError, with the tail of
    that output, if the cloud cannot be brought up (or ``cloud.sh`` runs longer than ``timeout`` s).
    """
    if is_up():
        return clouds_yaml()
    if os.geteuid() != 0:
        raise RuntimeError(
            f"the OpenStack test cloud in {osci_dir()} is not up, and starting it needs root: "
            f"run `sudo bash {CLOUD_SH} up` (or `make openstack-cloud`) first"
        )
    tail: collections.deque[str] = collections.deque(maxlen=40)
    proc = subprocess.Popen(
        ["bash", str(CLOUD_SH), "up"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    timed_out = threading.Event()

    def _kill() -> None:
        timed_out.set()
        proc.kill()

    timer = threading.Timer(timeout, _kill)
    timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stderr.write(line)
            sys.stderr.flush()
            tail.append(line)
        rc = proc.wait()
    finally:
        timer.cancel()
    if rc == 0 and is_up():
        return clouds_yaml()
    why = f"timed out after {timeout:.0f}s" if timed_out.is_set() else f"exit status {rc}"
    raise RuntimeError(
        f"the OpenStack test cloud did not come up ({CLOUD_SH} up: {why}; "
        f"service logs in {osci_dir() / 'log'}). Last lines of its output:\n" + "".join(tail)
    )
