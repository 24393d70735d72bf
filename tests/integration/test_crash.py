"""Crash safety with real processes: kill -9 mid-sync, concurrent syncs, locks.

The simulated cloud commits each call halfway through its latency, so a
sync killed right after an object appears has created it without hearing
back: the next run must adopt it through its tag, never create it twice.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import (
    cli,
    cli_env,
    cli_json,
    creates,
    describe,
    duplicates,
    exposed_vms_spec,
    fake_ls,
    fake_ls_unknown,
    fake_object_count,
    ok,
    plan_json,
    spawn,
    tagged_ids,
)

NAME = "crashy"
VMS = 11  # 3 shared + 4 for the LB + 3 per exposed VM = 40 resources


def write_spec(path: Path, latency_ms: int) -> Path:
    return exposed_vms_spec(path, NAME, VMS, latency_ms, "10.50.0.0/24")


def fresh_creates(spec: Path, tmp_path: Path) -> list[str]:
    """What a sync creates from nothing: plan against an empty state dir."""
    empty = tmp_path / "empty-state"
    empty.mkdir(exist_ok=True)
    ids = creates(plan_json(spec, empty, code=2))
    assert len(ids) == len(set(ids)) >= 40
    return ids


def count_objects(state_dir: Path) -> int:
    return fake_object_count(state_dir, NAME)


def kill_when(
    proc: subprocess.Popen[str], state_dir: Path, objects: int, *, fewer: bool = False
) -> int:
    """SIGKILL ``proc`` as soon as the cloud holds ``objects`` objects (or,
    with ``fewer``, as soon as it holds fewer than that)."""
    deadline = time.monotonic() + 30
    seen = 0
    while time.monotonic() < deadline and proc.poll() is None:
        seen = count_objects(state_dir)
        if (seen < objects) if fewer else (seen >= objects):
            break
        time.sleep(0.005)
    what = f"fewer than {objects}" if fewer else f"{objects}"
    assert proc.poll() is None, f"sync ended before {what} objects existed (saw {seen})"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    return seen


def violations(state_dir: Path) -> list[str]:
    """Calls the simulated cloud refused (a port on a missing subnet,
    deleting a subnet still in use, ...): each is an ordering bug."""
    from cloudlet.providers.fake import FakeCloud

    cloud = FakeCloud(state_dir / "fake-cloud.db")
    try:
        return cloud.violations(NAME)
    finally:
        cloud.close()


def assert_converged(spec: Path, state_dir: Path, expected: list[str]) -> None:
    ok(cli("plan", spec, state_dir=state_dir), 0)
    status = cli_json("status", NAME, "--json", state_dir=state_dir)
    assert status["drift"] == [], status["drift"]
    rows = fake_ls(state_dir, NAME)
    ids = tagged_ids(rows)
    assert len(ids) == len(rows), [r for r in rows if r["id"] is None]  # nothing leaked untagged
    assert duplicates(ids) == []
    assert sorted(ids) == sorted(expected)
    assert violations(state_dir) == []


def test_kill_9_mid_sync_then_resync(tmp_path: Path, state_dir: Path) -> None:
    spec = write_spec(tmp_path / "crashy.yaml", latency_ms=30)
    expected = fresh_creates(spec, tmp_path)

    killed_at = []
    for threshold in (1, 15, 30):
        proc = spawn("sync", spec, "--yes", state_dir=state_dir)
        killed_at.append(kill_when(proc, state_dir, threshold))
        rows = fake_ls(state_dir, NAME)
        assert duplicates(tagged_ids(rows)) == [], f"after the kill at {threshold}"
    assert killed_at == sorted(killed_at)
    assert killed_at[-1] < len(expected)

    summary = cli_json("sync", spec, "--yes", "--json", state_dir=state_dir)
    assert summary["outcome"] == "converged", summary
    created = [a["id"] for a in summary["actions"] if a["op"] == "create"]
    assert len(created) <= len(expected) - killed_at[-1]
    assert_converged(spec, state_dir, expected)


def test_kill_9_mid_replacement_then_resync(tmp_path: Path, state_dir: Path) -> None:
    """A CIDR edit replaces the subnet and everything on it: old objects are
    deleted before new ones are created, so a kill in between leaves a
    half-rebuilt cloudlet that the next run must finish."""
    spec = write_spec(tmp_path / "crashy.yaml", latency_ms=30)
    ok(cli("sync", spec, "--yes", state_dir=state_dir))
    before = {r["id"]: r["uid"] for r in fake_ls(state_dir, NAME)}
    edited = tmp_path / "crashy-cidr.yaml"
    edited.write_text(spec.read_text().replace("10.50.0.0/24", "10.51.0.0/24"))
    plan = plan_json(edited, state_dir, code=2)
    replaced = {a["id"] for a in plan["actions"] if a["op"] == "replace"}
    assert {"subnet/internal", "port/vm-0", "vm/vm-0"} <= replaced

    proc = spawn("sync", edited, "--yes", state_dir=state_dir)
    kill_when(proc, state_dir, len(before), fewer=True)
    assert count_objects(state_dir) < len(before)

    ok(cli("sync", edited, "--yes", state_dir=state_dir))
    assert_converged(edited, state_dir, list(before))
    after = {r["id"]: r for r in fake_ls(state_dir, NAME)}
    assert after["subnet/internal"]["attrs"]["cidr"] == "10.51.0.0/24"
    for rid in replaced:
        assert after[rid]["uid"] != before[rid], f"{rid} was not rebuilt"
    assert after["network/internal"]["uid"] == before["network/internal"]


def journal_after(state_dir: Path) -> list[tuple[str, str, str, str | None]]:
    """What the store's journal holds for the cloudlet: (step, op, id, uid)."""
    from cloudlet.store.records import StateRepo
    from cloudlet.store.sqlite import open_store

    store = open_store(state_dir)
    try:
        return sorted((j.step, j.op, j.id, j.uid) for j in StateRepo(store).journal_pending(NAME))
    finally:
        store.close()


def test_kill_9_with_three_copies_of_one_id_in_flight_then_resync(
    tmp_path: Path, state_dir: Path
) -> None:
    """Three copies of one VM plan to three steps that run side by side (an
    update of the one kept, a delete of each other). Each is journaled on
    its own: a kill while all three are in flight leaves all three on
    record, and the next run finishes the job with one object per id."""
    fast = write_spec(tmp_path / "crashy.yaml", latency_ms=0)
    ok(cli("sync", fast, "--yes", state_dir=state_dir))
    expected = tagged_ids(fake_ls(state_dir, NAME))
    for _ in range(2):
        ok(cli("fake", "cp", NAME, "vm/vm-0", state_dir=state_dir))
    copies = [r["uid"] for r in fake_ls(state_dir, NAME) if r["id"] == "vm/vm-0"]
    assert len(set(copies)) == 3
    for uid in copies:  # drift on every copy: the one kept is updated
        ok(cli("fake", "set", NAME, uid, "flavor=m1.tiny", state_dir=state_dir))
    plan = plan_json(fast, state_dir, code=2)["actions"]
    assert sorted((a["op"], a["id"]) for a in plan) == [
        ("delete", "vm/vm-0"),
        ("delete", "vm/vm-0"),
        ("update", "vm/vm-0"),
    ]
    (kept,) = (a["uid"] for a in plan if a["op"] == "update")
    removed = sorted(a["uid"] for a in plan if a["op"] == "delete")
    assert sorted([kept, *removed]) == sorted(copies)

    # Each call commits halfway through its 2 s: killed once a copy is gone,
    # the run has heard back from none of the three.
    slow = write_spec(tmp_path / "crashy-slow.yaml", latency_ms=2000)
    objects = count_objects(state_dir)
    proc = spawn("sync", slow, "--yes", "--parallelism", "3", state_dir=state_dir)
    kill_when(proc, state_dir, objects, fewer=True)
    assert journal_after(state_dir) == sorted(
        [("update:vm/vm-0", "update", "vm/vm-0", kept)]
        + [(f"delete:vm/vm-0@{uid}", "delete", "vm/vm-0", uid) for uid in removed]
    )

    summary = cli_json("sync", fast, "--yes", "--json", state_dir=state_dir)
    assert summary["outcome"] == "converged", summary
    assert journal_after(state_dir) == []
    assert_converged(fast, state_dir, expected)
    (vm,) = (r for r in fake_ls(state_dir, NAME) if r["id"] == "vm/vm-0")
    assert vm["uid"] == kept and vm["attrs"]["flavor"] != "m1.tiny"


def test_concurrent_syncs_of_one_cloudlet(tmp_path: Path, state_dir: Path) -> None:
    spec = write_spec(tmp_path / "crashy.yaml", latency_ms=50)
    expected = fresh_creates(spec, tmp_path)

    args = ("sync", spec, "--yes", "--json", "--parallelism", "2")
    # Three at once on a fresh state dir: they also race to create the store.
    procs = [spawn(*args, state_dir=state_dir) for _ in range(3)]
    outs = [p.communicate(timeout=60) for p in procs]
    for p, (stdout, stderr) in zip(procs, outs, strict=True):
        assert p.returncode == 0, f"exit {p.returncode}\n{stdout}\n{stderr}"
        assert "Traceback" not in stdout + stderr
    summaries = [json.loads(stdout) for stdout, _ in outs]
    # The lock serialises the runs: one creates everything, the others find
    # nothing left to do; no resource is created twice.
    created = [a["id"] for s in summaries for a in s["actions"] if a["op"] == "create"]
    assert sorted(created) == sorted(expected)
    assert_converged(spec, state_dir, expected)


HOLD_LOCK = """
import sys, time
from pathlib import Path
from cloudlet.store.sqlite import open_store
store = open_store(Path(sys.argv[1]))
with store.lock("sync-" + sys.argv[2], 60):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_lock_timeout_is_reported(tmp_path: Path, state_dir: Path) -> None:
    spec = write_spec(tmp_path / "crashy.yaml", latency_ms=0)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(state_dir), NAME],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        proc = cli("sync", spec, "--yes", state_dir=state_dir, env={"CLOUDLET_LOCK_TIMEOUT": "1"})
        took = time.monotonic() - t0
        ok(proc, 1)
        assert "another process" in proc.stderr, describe(proc)
        assert str(holder.pid) in proc.stderr, describe(proc)
        assert 1.0 <= took < 10, took
        # it gave up before touching anything
        fake_ls_unknown(state_dir, NAME)
        ok(cli("get", NAME, state_dir=state_dir), 1)
    finally:
        holder.kill()
        holder.communicate(timeout=10)
    # The kernel drops a dead holder's lock: the next sync just runs.
    ok(cli("sync", spec, "--yes", state_dir=state_dir, env={"CLOUDLET_LOCK_TIMEOUT": "5"}))
    assert len(tagged_ids(fake_ls(state_dir, NAME))) >= 40


HOLD_FRESH_STORE = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("writing", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


def test_a_store_being_created_by_another_process_is_waited_for(
    tmp_path: Path, state_dir: Path
) -> None:
    """Two first runs on a fresh state dir race to create ``state.db``: while
    one holds its first write transaction (before WAL is switched on), the
    other must wait like any writer, not die with "database is locked".
    Deterministic stand-in for the race that the concurrent syncs above hit
    now and then."""
    spec = write_spec(tmp_path / "crashy.yaml", latency_ms=0)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_FRESH_STORE, str(state_dir / "state.db"), "1.0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "writing"
        proc = cli("apply", spec, state_dir=state_dir)
    finally:
        holder.communicate(timeout=10)
    ok(proc)
    ok(cli("get", NAME, state_dir=state_dir))
