"""With etcd gone for good, the store fails fast after the first timeout.

Each call used to wait out its own timeout (10 s), so a sync whose steps each
write a journal entry took minutes to fail; now, once one call has given up
reaching etcd, the next try every endpoint once and fail at once, until a
call gets through again.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from conftest import NO_ROUTER, cli_argv, cli_env, describe
from etcd_server import EtcdServer

from cloudlet.errors import StoreUnavailable
from cloudlet.store.etcd import EtcdStore

TIMEOUT = 3.0
# Before the fix such a sync took about three timeouts after etcd died (its
# steps' journal writes, then its status writes, each waited its own); now one.
SYNC_TIMEOUT = 5.0


def timed(call: object) -> float:
    start = time.monotonic()
    with pytest.raises(StoreUnavailable):
        call()  # type: ignore[operator]
    return time.monotonic() - start


def test_calls_fail_fast_once_etcd_is_known_gone_and_recover() -> None:
    server = EtcdServer().start()
    try:
        store = EtcdStore(server.endpoint, prefix="/gone", timeout=TIMEOUT)
        store.put("/k", b"1")
        server.stop()
        first = timed(lambda: store.put("/k", b"2"))
        assert first >= TIMEOUT * 0.9
        later = [timed(lambda: store.get("/k")) for _ in range(5)]
        assert max(later) < TIMEOUT / 3, later
        server.restart()
        assert store.get("/k") is not None  # a call gets through: normal patience again
        store.close()
    finally:
        server.cleanup()


def test_a_sync_fails_soon_after_etcd_dies(tmp_path: Path) -> None:
    server = EtcdServer().start()
    spec = tmp_path / "slow.yaml"
    spec.write_text(NO_ROUTER.read_text().replace("latencyMs: 20", "latencyMs: 300"))
    state_dir = tmp_path / "state"
    try:
        proc = subprocess.Popen(
            cli_argv(state_dir, "--etcd", server.endpoint, "sync", spec, "--yes"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env({"CLOUDLET_ETCD_TIMEOUT": str(SYNC_TIMEOUT)}),
            cwd=tmp_path,
        )
        time.sleep(3)
        server.stop()
        killed = time.monotonic()
        out, err = proc.communicate(timeout=300)
        took = time.monotonic() - killed
        done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        assert proc.returncode == 1, describe(done)
        assert "cannot reach etcd" in err.splitlines()[-1], describe(done)
        # About one timeout (the first call's), not one per step still to go.
        assert took < SYNC_TIMEOUT * 2.2, f"{took:.1f} s\n{describe(done)}"
    finally:
        server.cleanup()
