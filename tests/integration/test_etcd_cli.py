"""The command line with ``--etcd``: the desired state, status, history and
locks live in a real etcd; the fake provider's simulated cloud stays in the
state directory. A bad endpoint is one plain line, never a traceback."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import yaml
from conftest import (
    NO_ROUTER,
    ROUTER,
    cli,
    cli_argv,
    cli_env,
    describe,
    duplicates,
    edited_copy,
    fake_ls,
    ok,
    tagged_ids,
)
from etcd_server import (
    EtcdServer,
    etcd,  # noqa: F401 - the fixture, used by name
    free_port,
)

from cloudlet.store.etcd import EtcdStore
from cloudlet.store.records import DESIRED, StateRepo


def on_etcd(
    server: EtcdServer, prefix: str, state_dir: Path, *args: str | Path
) -> subprocess.CompletedProcess[str]:
    env = {"CLOUDLET_ETCD_PREFIX": prefix}
    return cli("--etcd", server.endpoint, *args, state_dir=state_dir, env=env)


def test_sync_status_and_revisions_over_etcd(
    etcd: EtcdServer,  # noqa: F811
    tmp_path: Path,
    state_dir: Path,
) -> None:
    prefix = f"/cli-{tmp_path.name}"
    summary = json.loads(
        ok(on_etcd(etcd, prefix, state_dir, "sync", NO_ROUTER, "--yes", "--json")).stdout
    )
    assert summary["actions"] and all(a["outcome"] == "ok" for a in summary["actions"])
    # --json is no consent (issue 11): a pipe needs --yes.
    again = json.loads(
        ok(on_etcd(etcd, prefix, state_dir, "sync", NO_ROUTER, "--yes", "--json")).stdout
    )
    assert again["actions"] == []

    status = json.loads(ok(on_etcd(etcd, prefix, state_dir, "status", "berlin-1", "--json")).stdout)
    assert status["cloudlet"] == "berlin-1" and status["drift"] == []
    assert {r["id"] for r in status["resources"]} == set(tagged_ids(fake_ls(state_dir, "berlin-1")))
    assert len(status["portMappings"]) == 4

    # The store is etcd: nothing but the simulated cloud is on local disk ...
    assert not (state_dir / "state.db").exists()
    with EtcdStore(etcd.endpoint, prefix=prefix) as store:
        repo = StateRepo(store)
        desired = repo.get_desired("berlin-1")
        assert desired is not None and desired.document["metadata"]["name"] == "berlin-1"
        assert [e.key for e in store.list(DESIRED)] == [DESIRED + "berlin-1"]
        assert repo.get_status("berlin-1") is not None
    # ... so another machine (another state dir) reads the same desired state,
    other = tmp_path / "other"
    other.mkdir()
    got = ok(on_etcd(etcd, prefix, other, "get", "berlin-1")).stdout
    assert yaml.safe_load(got)["metadata"]["name"] == "berlin-1"
    assert f"# revision {desired.revision}" in got
    # and another prefix on the same etcd sees nothing.
    ok(on_etcd(etcd, prefix + "-x", other, "get", "berlin-1"), 1)


def test_apply_get_history_rollback_over_etcd(
    etcd: EtcdServer,  # noqa: F811
    tmp_path: Path,
    state_dir: Path,
) -> None:
    prefix = f"/cli-{tmp_path.name}"
    ok(on_etcd(etcd, prefix, state_dir, "apply", ROUTER))
    # apply stores the desired state only: known to the store, nothing at the site
    ls = ok(on_etcd(etcd, prefix, state_dir, "fake", "ls", "munich-2", "--json"))
    assert json.loads(ls.stdout) == []
    edited = edited_copy(ROUTER, tmp_path / "router-v2.yaml", "image: redis-7", "image: redis-8")
    ok(on_etcd(etcd, prefix, state_dir, "apply", edited))
    assert "redis-8" in ok(on_etcd(etcd, prefix, state_dir, "get", "munich-2")).stdout

    history = ok(on_etcd(etcd, prefix, state_dir, "history", "munich-2")).stdout
    revisions = [int(line.split()[1]) for line in history.splitlines() if line[:9] == "revision "]
    assert len(revisions) == 2 and revisions == sorted(revisions), history
    assert "redis-7" in history and "redis-8" in history

    ok(on_etcd(etcd, prefix, state_dir, "rollback", "munich-2", "--to", str(revisions[0])))
    got = ok(on_etcd(etcd, prefix, state_dir, "get", "munich-2")).stdout
    assert "redis-7" in got and "redis-8" not in got
    # CLOUDLET_ETCD selects etcd as --etcd does.
    env = {"CLOUDLET_ETCD": etcd.endpoint, "CLOUDLET_ETCD_PREFIX": prefix}
    assert "redis-7" in ok(cli("get", "munich-2", state_dir=state_dir, env=env)).stdout


def _one_line_failure(proc: subprocess.CompletedProcess[str]) -> str:
    ok(proc, 1)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, describe(proc)
    return lines[0]


def test_unreachable_or_invalid_etcd_is_one_plain_line(state_dir: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    env = {"CLOUDLET_ETCD_TIMEOUT": "0.5"}
    for args in (["status", "berlin-1"], ["sync", str(NO_ROUTER), "--yes"], ["get", "x"]):
        proc = cli("--etcd", dead, *args, state_dir=state_dir, env=env)
        line = _one_line_failure(proc)
        assert line.startswith(f"cloudlet: cannot reach etcd at {dead}: "), describe(proc)
    line = _one_line_failure(cli("--etcd", "nonsense", "get", "x", state_dir=state_dir))
    assert "invalid etcd endpoint 'nonsense'" in line
    bad_prefix = {"CLOUDLET_ETCD_PREFIX": "/a/kv"}
    line = _one_line_failure(cli("--etcd", dead, "get", "x", state_dir=state_dir, env=bad_prefix))
    assert "invalid etcd key prefix" in line


def test_a_sync_frozen_past_its_lock_starts_nothing_more(
    etcd: EtcdServer,  # noqa: F811
    tmp_path: Path,
    state_dir: Path,
) -> None:
    """Issue 9's reproduction: a CLI sync frozen (SIGSTOP) for longer than its
    lock's TTL while a second sync takes the lock and converges. Resumed, the
    first finishes at most the calls it had on the wire, starts no new step,
    writes no journal entry or status, and exits non-zero saying why."""
    slow = edited_copy(NO_ROUTER, tmp_path / "slow.yaml", "latencyMs: 20", "latencyMs: 150")
    prefix = f"/frozen-{tmp_path.name}"
    env = cli_env({"CLOUDLET_ETCD_PREFIX": prefix, "CLOUDLET_ETCD_LOCK_TTL": "2"})
    argv = cli_argv(state_dir, "--etcd", etcd.endpoint, "sync", slow, "--yes", "--parallelism", "2")
    first = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    try:
        assert first.stdout is not None
        while sum(_finished(line) for line in lines) < 3:  # a few steps done, more to go
            line = first.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        first.send_signal(signal.SIGSTOP)
        done_when_frozen = sum(_finished(line) for line in lines)
        second_env = {"CLOUDLET_ETCD_PREFIX": prefix, "CLOUDLET_LOCK_TIMEOUT": "60"}
        second = cli(
            "--etcd",
            etcd.endpoint,
            "sync",
            slow,
            "--yes",
            "--json",
            state_dir=state_dir,
            env=second_env,
            timeout=120,
        )
        assert json.loads(ok(second).stdout)["outcome"] == "converged"
    finally:
        first.send_signal(signal.SIGCONT)
    rest, _ = first.communicate(timeout=60)
    lines += rest.splitlines(keepends=True)
    output = "".join(lines)
    assert first.returncode == 1, output
    assert "lost the cloudlet's lock" in output, output
    assert "Traceback" not in output, output
    after = sum(_finished(line) for line in lines) - done_when_frozen
    assert after <= 2, f"{after} steps finished after the resume (parallelism 2):\n{output}"
    # Nothing duplicated, nothing left behind, and the second sync's verdict stands.
    rows = fake_ls(state_dir, "berlin-1")
    assert duplicates(tagged_ids(rows)) == []
    assert ok(on_etcd(etcd, prefix, state_dir, "plan", slow), 0)
    with EtcdStore(etcd.endpoint, prefix=prefix) as store:
        repo = StateRepo(store)
        record = repo.get_sync("berlin-1")
        assert record is not None and record.converged, record
        assert repo.journal_pending("berlin-1") == []


def _finished(line: str) -> bool:
    return line.lstrip().startswith(("created ", "updated ", "deleted "))
