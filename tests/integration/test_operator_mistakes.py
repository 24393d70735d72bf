"""Operator and environment mistakes: one line naming the culprit, exit 1,
nothing changed, never "internal error" (issue 11).

Each test drives the real CLI in a subprocess, as an operator would.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import NO_ROUTER, cli, describe, ok

from cloudlet.errors import StateFileLocked
from cloudlet.store.sqlite import SqliteStore


def one_line(proc: subprocess.CompletedProcess[str], *names: str) -> str:
    """The CLI failed with exit 1 and one line on stderr naming each of ``names``."""
    ok(proc, 1)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, describe(proc)
    (line,) = lines
    for name in names:
        assert name in line, describe(proc)
    return line


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stored(state_dir: Path) -> Path:
    ok(cli("apply", NO_ROUTER, state_dir=state_dir))
    return state_dir / "state.db"


# --- the state directory and its database ---------------------------------------------


def test_state_dir_naming_a_file(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    one_line(cli("plan", NO_ROUTER, state_dir=afile), str(afile), "not a directory")
    one_line(cli("plan", NO_ROUTER, state_dir=afile / "sub"), str(afile / "sub"))
    assert afile.read_text() == "mine\n"


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "garbage"])
def test_damaged_state_database(state_dir: Path, damage: str) -> None:
    db = stored(state_dir)
    for side in ("-wal", "-shm"):
        assert not Path(f"{db}{side}").exists()
    data = db.read_bytes()
    if damage == "truncated":
        db.write_bytes(data[: len(data) // 4 + 100])
    elif damage == "corrupt":
        db.write_bytes(data[:4096] + b"\xff" * 4096 + data[8192:])
    else:
        db.write_bytes(b"not sqlite at all " * 300)
    before = digest(db)
    for args in (("status", "berlin-1"), ("apply", NO_ROUTER), ("sync", NO_ROUTER, "--yes")):
        line = one_line(cli(*args, state_dir=state_dir), str(db))
        assert "corrupt" in line and "nothing was changed" in line
        assert digest(db) == before


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """``path`` read-only even for root (the immutable flag), or skip."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        yield
        path.chmod(0o644)
        return
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a file immutable here (chattr +i)")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_read_only_state_database(state_dir: Path) -> None:
    db = stored(state_dir)
    before = digest(db)
    edited = state_dir.parent / "edited.yaml"
    edited.write_text(NO_ROUTER.read_text().replace("berlin-1", "berlin-2"))
    with read_only(db):
        line = one_line(cli("apply", edited, state_dir=state_dir), str(db), "read-only")
        assert "internal error" not in line
    assert digest(db) == before


HOLD = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("held", flush=True)
sys.stdin.read()
"""


def test_database_locked_by_another_writer(state_dir: Path) -> None:
    db = stored(state_dir)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(StateFileLocked) as caught:
            SqliteStore(db, busy_timeout=0.2).put("k", b"v")
        message = str(caught.value)
        assert str(db) in message and "locked by another writer" in message
        assert f"pid {holder.pid}" in message
    finally:
        holder.communicate("")


# --- files the operator asks for with -o ------------------------------------------------


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (("graph", NO_ROUTER, "-o"), "out.dot"),
        (("graph", NO_ROUTER, "-o"), "out.svg"),
        (("export", "heat", NO_ROUTER, "-o"), "out.yaml"),
    ],
)
def test_output_into_a_missing_folder(state_dir: Path, args: tuple[str, ...], name: str) -> None:
    target = state_dir.parent / "missing" / name
    one_line(cli(*args, target, state_dir=state_dir), str(target), "no directory")
    assert not target.parent.exists()


# --- validation refuses what would break later ------------------------------------------


def test_slash_in_a_cloudlet_name(state_dir: Path) -> None:
    bad = state_dir.parent / "ab.yaml"
    bad.write_text(NO_ROUTER.read_text().replace("name: berlin-1", "name: a/b"))
    line = one_line(cli("validate", bad, state_dir=state_dir), f"{bad}:11:9:", "'a/b'")
    assert "metadata.name" in line
    for args in (("status", "a/b"), ("destroy", "a/b", "--yes"), ("rollback", "a/b", "--to", "1")):
        one_line(cli(*args, state_dir=state_dir), "'a/b'")


def test_huge_latency_is_refused_where_it_is_written(state_dir: Path) -> None:
    bad = state_dir.parent / "slow.yaml"
    bad.write_text(NO_ROUTER.read_text().replace("latencyMs: 20", "latencyMs: 9223372036854775807"))
    for args in (("validate", bad), ("sync", bad, "--yes")):
        one_line(cli(*args, state_dir=state_dir), f"{bad}:16:16:", "latencyMs")


def test_validate_of_a_fifo_with_no_writer_does_not_block(state_dir: Path) -> None:
    fifo = state_dir.parent / "spec.yaml"
    os.mkfifo(fifo)
    for args in (("validate", fifo), ("plan", fifo)):
        proc = cli(*args, state_dir=state_dir, timeout=20)
        one_line(proc, str(fifo), "not a regular file")


# --- credentials in the SDK's log lines -------------------------------------------------

LEAKY_CLOUDS = """\
clouds:
  osci-demo:
    auth: {auth_url: "http://admin:s3cr3tpw@127.0.0.1:1/v3", username: demo,
           password: pw2secret, user_domain_name: Default, project_domain_name: Default}
    region_name: RegionOne
    identity_api_version: 3
"""


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_password_in_auth_url_appears_nowhere(state_dir: Path, log_format: str) -> None:
    """Against a closed local port: keystoneauth warns with the auth_url."""
    clouds = state_dir.parent / "clouds.yaml"
    clouds.write_text(LEAKY_CLOUDS)
    examples = NO_ROUTER.parent
    proc = cli(
        "--log-format",
        log_format,
        "plan",
        examples / "openstack.yaml",
        state_dir=state_dir,
        env={"OS_CLIENT_CONFIG_FILE": str(clouds)},
    )
    ok(proc, 1)
    assert "s3cr3tpw" not in proc.stderr + proc.stdout, describe(proc)
    assert "pw2secret" not in proc.stderr + proc.stdout, describe(proc)
    warned = [line for line in proc.stderr.splitlines() if "identity versions" in line]
    assert warned, describe(proc)  # the SDK's warning is still shown, masked
    for line in warned:
        assert "http://***@127.0.0.1:1/v3" in line
        if log_format == "json":
            assert json.loads(line)["logger"].startswith("keystoneauth")


def test_a_password_in_os_auth_url_appears_nowhere(state_dir: Path, tmp_path: Path) -> None:
    spec = tmp_path / "envvars.yaml"
    spec.write_text(
        (NO_ROUTER.parent / "openstack.yaml")
        .read_text()
        .replace("cloud: osci-demo", "cloud: envvars")
    )
    env = {
        "OS_AUTH_URL": "http://admin:s3cr3tpw@127.0.0.1:1/v3",
        "OS_USERNAME": "demo",
        "OS_PASSWORD": "pw2secret",
        "OS_PROJECT_NAME": "demo",
        "OS_USER_DOMAIN_NAME": "Default",
        "OS_PROJECT_DOMAIN_NAME": "Default",
        "OS_CLIENT_CONFIG_FILE": str(tmp_path / "none.yaml"),
    }
    proc = cli("-v", "plan", spec, state_dir=state_dir, env=env)
    assert proc.returncode == 1, describe(proc)
    assert "s3cr3tpw" not in proc.stderr + proc.stdout, describe(proc)
    assert "pw2secret" not in proc.stderr + proc.stdout, describe(proc)


# --- clouds.yaml -------------------------------------------------------------------------

OPENSTACK = NO_ROUTER.parent / "openstack.yaml"


def test_a_broken_clouds_yaml_is_named_with_its_line(state_dir: Path) -> None:
    clouds = state_dir.parent / "clouds.yaml"
    clouds.write_text(
        'clouds:\n  osci-demo:\n    auth: {auth_url: "http://127.0.0.1:1/v3"\n   x: [\n'
    )
    env = {"OS_CLIENT_CONFIG_FILE": str(clouds)}
    line = one_line(cli("plan", OPENSTACK, state_dir=state_dir, env=env), f"{clouds}:4:4:")
    assert "not valid YAML" in line and "was not found" not in line


def test_the_hint_fits_the_platform_block(state_dir: Path, tmp_path: Path) -> None:
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text("clouds:\n  other: {auth: {auth_url: 'http://127.0.0.1:1/v3'}}\n")
    env = {"OS_CLIENT_CONFIG_FILE": str(clouds)}
    line = one_line(cli("plan", OPENSTACK, state_dir=state_dir, env=env), "osci-demo", str(clouds))
    assert "OS_*" not in line
    envvars = tmp_path / "envvars.yaml"
    envvars.write_text(OPENSTACK.read_text().replace("cloud: osci-demo", "cloud: envvars"))
    one_line(cli("plan", envvars, state_dir=state_dir, env=env), "envvars", "OS_AUTH_URL")


# --- small inconsistencies ---------------------------------------------------------------


def test_rollback_of_an_unknown_cloudlet_says_so(state_dir: Path) -> None:
    line = one_line(cli("rollback", "nobody", "--to", "1", state_dir=state_dir), "'nobody'")
    assert line == f"cloudlet: no cloudlet named 'nobody' in {state_dir}"
    stored(state_dir)
    line = one_line(cli("rollback", "berlin-1", "--to", "99", state_dir=state_dir))
    assert line == "cloudlet: cloudlet 'berlin-1' has no revision 99"
