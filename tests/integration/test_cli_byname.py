"""Issue 11, "work by name": list, status without a name, sync NAME,
rollback --sync, plan --offline, and destroy showing what goes first.

Each test drives the real CLI in subprocesses against its own state
directory (store and simulated cloud), as the other CLI tests do.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import time
from pathlib import Path

from conftest import (
    NO_ROUTER,
    ROUTER,
    cli,
    cli_argv,
    cli_env,
    cli_json,
    describe,
    edited_copy,
    fake_ls,
    fake_ls_unknown,
    ok,
    plan_json,
    tagged_ids,
)

NAME = "berlin-1"  # examples/no-router.yaml


def synced(state_dir: Path, file: Path = NO_ROUTER) -> None:
    ok(cli("sync", file, "--yes", state_dir=state_dir))


def history_revisions(state_dir: Path, name: str) -> list[int]:
    proc = ok(cli("history", name, "--brief", state_dir=state_dir))
    return [int(m) for m in re.findall(r"^revision (\d+)", proc.stdout, re.M)]


# --- list, status with no name ---------------------------------------------------------


def test_list_shows_each_cloudlet_with_revisions_last_sync_and_ready(state_dir: Path) -> None:
    assert cli_json("list", "--json", state_dir=state_dir) == []
    assert "no cloudlets" in ok(cli("list", state_dir=state_dir)).stdout

    synced(state_dir)
    ok(cli("apply", ROUTER, state_dir=state_dir))  # stored, never synced
    rows = {r["name"]: r for r in cli_json("list", "--json", state_dir=state_dir)}
    assert set(rows) == {NAME, "munich-2"}
    berlin, munich = rows[NAME], rows["munich-2"]
    assert berlin["syncedRevision"] == berlin["desiredRevision"]
    assert berlin["lastSync"]["outcome"] == "converged"
    assert isinstance(berlin["lastSync"]["at"], float)
    assert (berlin["ready"], berlin["reason"]) == ("True", "Converged")
    assert munich["syncedRevision"] is None and munich["lastSync"] is None
    assert (munich["ready"], munich["reason"]) == ("False", "Pending")

    table = ok(cli("list", state_dir=state_dir)).stdout.splitlines()
    assert table[0].split() == ["NAME", "DESIRED", "SYNCED", "LAST", "SYNC", "OUTCOME", "READY"]
    line = next(row for row in table if row.startswith(NAME))
    assert "converged" in line and "True (Converged)" in line and "UTC" in line, table
    line = next(row for row in table if row.startswith("munich-2"))
    assert "never" in line and "False (Pending)" in line, table

    # status with no NAME lists too, the same output.
    assert cli_json("status", "--json", state_dir=state_dir) == cli_json(
        "list", "--json", state_dir=state_dir
    )
    assert ok(cli("status", state_dir=state_dir)).stdout.splitlines()[0] == table[0]


# --- sync NAME ---------------------------------------------------------------------------


def test_sync_by_name_reconciles_the_stored_state_and_stores_nothing(state_dir: Path) -> None:
    synced(state_dir)
    before = history_revisions(state_dir, NAME)
    ok(cli("fake", "rm", NAME, "vm/game", state_dir=state_dir))
    assert "vm/game" not in tagged_ids(fake_ls(state_dir, NAME))

    summary = cli_json("sync", NAME, "--yes", "--json", state_dir=state_dir)
    assert [(a["id"], a["op"], a["outcome"]) for a in summary["actions"]] == [
        ("vm/game", "create", "ok")
    ]
    assert "vm/game" in tagged_ids(fake_ls(state_dir, NAME))
    assert history_revisions(state_dir, NAME) == before  # no store write of desired state
    ok(cli("plan", NO_ROUTER, state_dir=state_dir), 0)


def test_sync_of_a_name_that_is_neither_file_nor_cloudlet_says_one_line(
    state_dir: Path,
) -> None:
    for arg in ("nowhere", "no/such.yaml"):
        proc = ok(cli("sync", arg, "--yes", state_dir=state_dir), 1)
        assert proc.stderr.strip() == (
            f"cloudlet: no file or stored cloudlet named {arg} in {state_dir}"
        ), describe(proc)


# --- rollback --sync, and the hints ----------------------------------------------------


def test_rollback_sync_returns_the_cloud_to_the_earlier_revision(
    tmp_path: Path, state_dir: Path
) -> None:
    synced(state_dir)
    (first,) = history_revisions(state_dir, NAME)
    bigger = edited_copy(NO_ROUTER, tmp_path / "b.yaml", "flavor: m1.small", "flavor: m1.large")
    synced(state_dir, bigger)
    flavor = {r["id"]: r["attrs"].get("flavor") for r in fake_ls(state_dir, NAME)}
    assert flavor["vm/game"] == "m1.large"

    proc = ok(cli("rollback", NAME, "--to", str(first), "--sync", state_dir=state_dir))
    assert "converged" in proc.stdout, describe(proc)
    flavor = {r["id"]: r["attrs"].get("flavor") for r in fake_ls(state_dir, NAME)}
    assert flavor["vm/game"] == "m1.small"
    row = cli_json("list", "--json", state_dir=state_dir)[0]
    assert row["syncedRevision"] == row["desiredRevision"] > first


def test_every_hint_names_a_command_that_works(tmp_path: Path, state_dir: Path) -> None:
    """rollback without --sync, and status of a pending revision, say what
    to run: each such command runs, and does what the hint promised."""
    synced(state_dir)
    (first,) = history_revisions(state_dir, NAME)
    bigger = edited_copy(NO_ROUTER, tmp_path / "b.yaml", "flavor: m1.small", "flavor: m1.large")
    synced(state_dir, bigger)

    said = ok(cli("rollback", NAME, "--to", str(first), state_dir=state_dir)).stdout
    said += ok(cli("status", NAME, state_dir=state_dir)).stdout
    hints = re.findall(r"run '(cloudlet [^']+)'", said)
    assert hints and set(hints) == {f"cloudlet sync {NAME}"}, said
    for hint in set(hints):
        ok(cli(*hint.split()[1:], "--yes", state_dir=state_dir))
    assert cli_json("status", NAME, "--json", state_dir=state_dir)["drift"] == []
    flavor = {r["id"]: r["attrs"].get("flavor") for r in fake_ls(state_dir, NAME)}
    assert flavor["vm/game"] == "m1.small"


# --- status: pending, drift by attribute, last sync --------------------------------------


def test_status_shows_a_stored_revision_as_pending_and_drift_by_attribute(
    tmp_path: Path, state_dir: Path
) -> None:
    synced(state_dir)
    bigger = edited_copy(NO_ROUTER, tmp_path / "b.yaml", "flavor: m1.small", "flavor: m1.large")
    ok(cli("apply", bigger, state_dir=state_dir))  # stored, not synced
    ok(cli("fake", "set", NAME, "vm/api", "flavor=m1.tiny", state_dir=state_dir))

    status = cli_json("status", NAME, "--json", state_dir=state_dir)
    assert status["drift"] == ["vm/api"]  # out of band: drift
    assert status["pending"] == ["vm/game"]  # the stored revision: pending
    resources = {r["id"]: r for r in status["resources"]}
    assert resources["vm/game"]["state"] == "pending"
    assert resources["vm/api"]["changes"] == [
        {"attr": "flavor", "actual": "m1.tiny", "desired": "m1.medium"}
    ]
    assert status["desiredRevision"] > status["lastSync"]["revision"]

    text = ok(cli("status", NAME, state_dir=state_dir)).stdout
    assert "drift vm/api: flavor is m1.tiny, desired m1.medium" in text, text
    assert "pending vm/game: flavor is m1.small, desired m1.large" in text, text
    assert f"last sync: converged, revision {status['lastSync']['revision']}, " in text, text
    assert "UTC" in text


# --- plan shows what creates build -------------------------------------------------------


def test_plan_shows_key_attributes_and_public_ports(state_dir: Path) -> None:
    text = ok(cli("plan", NO_ROUTER, state_dir=state_dir), 2).stdout
    line = next(row for row in text.splitlines() if " vm/game " in row)
    assert "image game-server-v2" in line and "flavor m1.small" in line, text
    line = next(row for row in text.splitlines() if "subnet/internal" in row)
    assert "cidr 10.20.0.0/24" in line, text
    line = next(row for row in text.splitlines() if "lb-listener/root.chat.tcp.443" in row)
    assert "tcp/443 → public port 10000 (remapped)" in line, text
    doc = plan_json(NO_ROUTER, state_dir, code=2)
    chat = next(a for a in doc["actions"] if a["id"] == "lb-listener/root.chat.tcp.443")
    assert chat["attrs"]["publicPort"] == 10000


# --- plan --offline ----------------------------------------------------------------------


def unreachable(src: Path, dst: Path) -> Path:
    """The same cloudlet on a site that cannot be reached: an OpenStack cloud
    no clouds.yaml names (the plan is the same; only observing it fails)."""
    fake = "    type: fake\n    latencyMs: 20\n    jitterMs: 5\n    seed: 42\n"
    site = "    type: openstack\n    cloud: cloudlet-test-nowhere\n    externalNetwork: public\n"
    return edited_copy(src, dst, fake, site)


def test_plan_offline_previews_against_the_last_observation(
    tmp_path: Path, state_dir: Path
) -> None:
    proc = ok(cli("plan", "--offline", NAME, state_dir=state_dir), 1)
    said = f"cloudlet: no file or stored cloudlet named {NAME} in {state_dir}"
    assert proc.stderr.strip() == said
    ok(cli("apply", NO_ROUTER, state_dir=state_dir))
    proc = ok(cli("plan", "--offline", NAME, state_dir=state_dir), 1)
    assert "no stored observation" in proc.stderr and len(proc.stderr.splitlines()) == 1
    hint = re.search(r"run '(cloudlet [^']+)'", proc.stderr)
    assert hint and hint[1] == f"cloudlet sync {NAME}", describe(proc)

    ok(cli(*hint[1].split()[1:], "--yes", state_dir=state_dir))  # the hint works
    assert ok(cli("plan", "--offline", NAME, state_dir=state_dir), 0)
    bigger = edited_copy(NO_ROUTER, tmp_path / "b.yaml", "flavor: m1.small", "flavor: m1.large")
    cut_off = unreachable(bigger, tmp_path / "cut.yaml")
    proc = ok(cli("plan", cut_off, state_dir=state_dir), 1)  # the site cannot be reached
    assert "cloudlet-test-nowhere" in proc.stderr, describe(proc)

    text = ok(cli("plan", "--offline", cut_off, state_dir=state_dir), 2).stdout
    assert "offline" in text and "ago" in text, text
    assert "~ vm/game" in text and "flavor: m1.small → m1.large" in text, text
    assert "not known offline" in text and "drift" in text and "replacements" in text, text

    doc = cli_json("plan", "--offline", cut_off, "--json", state_dir=state_dir, code=2)
    assert [a["id"] for a in doc["actions"]] == ["vm/game"]
    assert doc["offline"]["ageSeconds"] >= 0
    assert isinstance(doc["offline"]["observedAt"], float)
    assert doc["offline"]["unknown"]

    # Drift since the observation is not seen offline (that is what it says).
    ok(cli("fake", "rm", NAME, "vm/api", state_dir=state_dir))
    assert "vm/api" not in ok(cli("plan", "--offline", NAME, state_dir=state_dir), 0).stdout
    # A destroyed cloudlet's observation goes with it.
    ok(cli("destroy", NAME, "--yes", state_dir=state_dir))
    proc = ok(cli("plan", "--offline", NO_ROUTER, state_dir=state_dir), 1)
    assert "no stored observation" in proc.stderr


# --- destroy lists what goes before it asks ----------------------------------------------


def test_destroy_lists_what_goes_then_refuses_without_yes(state_dir: Path) -> None:
    synced(state_dir)
    ids = tagged_ids(fake_ls(state_dir, NAME))
    proc = ok(cli("destroy", NAME, state_dir=state_dir), 1)
    assert "pass --yes" in proc.stderr
    listed = re.findall(r"^\s+- (\S+)", proc.stdout, re.M)
    assert sorted(listed) == sorted(ids), describe(proc)
    assert sorted(tagged_ids(fake_ls(state_dir, NAME))) == sorted(ids)  # nothing went

    proc = ok(cli("destroy", NAME, "--yes", state_dir=state_dir))
    listed = re.findall(r"^\s+- (\S+)", proc.stdout, re.M)
    assert sorted(listed) == sorted(ids), describe(proc)  # shown once, not twice
    fake_ls_unknown(state_dir, NAME)  # nothing left at the site, nor stored


def read_until(fd: int, marker: bytes, timeout: float = 60.0) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {marker!r} in {seen.decode(errors='replace')!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    return seen


def test_destroy_on_a_terminal_shows_the_deletes_before_the_question(state_dir: Path) -> None:
    synced(state_dir)
    ids = tagged_ids(fake_ls(state_dir, NAME))
    master, slave = os.openpty()
    proc = subprocess.Popen(
        cli_argv(state_dir, "destroy", NAME),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=cli_env(),
        cwd=state_dir,
        close_fds=True,
    )
    os.close(slave)
    try:
        before = read_until(master, b"[y/N]").decode()
        for rid in ids:
            assert rid in before, before
        assert before.index("vm/game") < before.index("[y/N]")
        os.write(master, b"n\n")
        assert proc.wait(timeout=60) == 1
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    assert sorted(tagged_ids(fake_ls(state_dir, NAME))) == sorted(ids)
