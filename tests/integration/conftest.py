"""Helpers for the integration tests: the real ``cloudlet`` CLI in subprocesses.

Every call runs ``python -m cloudlet --state-dir DIR ...`` with stdin that is
not a terminal, and an environment scrubbed of the store variables, so a test
only ever touches its own state directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
NO_ROUTER = EXAMPLES / "no-router.yaml"
ROUTER = EXAMPLES / "router.yaml"
FLOATING_IP = EXAMPLES / "floating-ip.yaml"
ALL_EXAMPLES = (NO_ROUTER, ROUTER, FLOATING_IP)

DEFAULT_TIMEOUT = 60.0


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDLET_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "200"  # rich wraps narrower terminals; keep plain lines whole
    env.update(extra or {})
    return env


def cli_argv(state_dir: Path | None, *args: str | Path) -> list[str]:
    argv = [sys.executable, "-m", "cloudlet"]
    if state_dir is not None:
        argv += ["--state-dir", str(state_dir)]
    return argv + [str(a) for a in args]


def _workdir(state_dir: Path | None) -> Path:
    """Run where stray relative paths land in the test's tmp dir, not the repo."""
    for d in (state_dir, state_dir.parent if state_dir else None):
        if d is not None and d.is_dir():
            return d
    return ROOT


def cli(
    *args: str | Path,
    state_dir: Path | None,
    input: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion; stdin is ``input`` or /dev/null (never a tty)."""
    return subprocess.run(
        cli_argv(state_dir, *args),
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(env),
        cwd=cwd or _workdir(state_dir),
        check=False,
    )


def spawn(
    *args: str | Path, state_dir: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start the CLI in the background (its own process group, for kill -9)."""
    return subprocess.Popen(
        cli_argv(state_dir, *args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(env),
        cwd=state_dir,
    )


def describe(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def ok(proc: subprocess.CompletedProcess[str], code: int = 0) -> subprocess.CompletedProcess[str]:
    """Assert the exit status and that nothing crashed; returns ``proc``."""
    assert proc.returncode == code, describe(proc)
    assert_no_traceback(proc)
    return proc


def assert_no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    for stream in (proc.stdout, proc.stderr):
        assert "Traceback" not in stream, describe(proc)
        assert "internal error" not in stream, describe(proc)


def cli_json(*args: str | Path, state_dir: Path | None, code: int = 0, **kw: Any) -> Any:
    """Run a ``--json`` command, assert its exit status, parse its stdout."""
    proc = ok(cli(*args, state_dir=state_dir, **kw), code)
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as err:  # pragma: no cover - failure message only
        raise AssertionError(f"stdout is not JSON ({err}):\n{describe(proc)}") from err


def fake_ls(state_dir: Path, name: str) -> list[dict[str, Any]]:
    rows = cli_json("fake", "ls", name, "--json", state_dir=state_dir)
    assert isinstance(rows, list)
    for row in rows:
        assert set(row) >= {"uid", "id", "kind", "attrs"}, row
    return rows


def fake_ls_unknown(state_dir: Path, name: str) -> str:
    """``fake ls`` of a cloudlet the simulated cloud holds nothing for and
    the store does not know (never synced, or destroyed): nothing is at the
    site, and it says so in one line with exit 1, not ``[]`` with exit 0."""
    proc = ok(cli("fake", "ls", name, "--json", state_dir=state_dir), 1)
    assert proc.stdout == "", describe(proc)
    (line,) = proc.stderr.splitlines()
    assert line.startswith("cloudlet: the simulated cloud holds nothing"), describe(proc)
    assert repr(name) in line, describe(proc)
    return line


def tagged_ids(rows: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in rows if r["id"] is not None]


def duplicates(ids: list[str]) -> list[str]:
    return sorted(i for i, n in Counter(ids).items() if n > 1)


def plan_json(file: Path, state_dir: Path, code: int | None = None) -> dict[str, Any]:
    """``plan --json``; exit 2 when it has actions, 0 when it has none."""
    proc = cli("plan", file, "--json", state_dir=state_dir)
    assert_no_traceback(proc)
    assert proc.returncode in (0, 2), describe(proc)
    doc: dict[str, Any] = json.loads(proc.stdout)
    assert (proc.returncode == 2) == bool(doc["actions"]), describe(proc)
    if code is not None:
        assert proc.returncode == code, describe(proc)
    return doc


def creates(plan: dict[str, Any], kind: str | None = None) -> list[str]:
    return [
        a["id"]
        for a in plan["actions"]
        if a["op"] == "create" and (kind is None or a["id"].startswith(kind + "/"))
    ]


def edited_copy(src: Path, dst: Path, old: str, new: str, count: int = 1) -> Path:
    text = src.read_text()
    assert text.count(old) >= count, f"{old!r} not in {src}"
    dst.write_text(text.replace(old, new, count))
    return dst


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    d.mkdir()
    return d


def exposed_vms_spec(path: Path, name: str, vms: int, latency_ms: int, cidr: str) -> Path:
    """A no-router cloudlet on the fake platform with ``vms`` VMs, each exposed
    through the root LB on its own port (3 resources per VM beside the 7
    shared ones): enough steps to crash or interrupt a sync mid-way."""
    lines = "".join(
        f"    - {{name: vm-{i}, network: internal, "
        f"expose: {{loadBalancer: root, ports: [{{protocol: tcp, port: {8000 + i}}}]}}}}\n"
        for i in range(vms)
    )
    path.write_text(
        textwrap.dedent(
            f"""\
            apiVersion: cloudlet/v1
            kind: Cloudlet
            metadata: {{name: {name}}}
            spec:
              platform: {{type: fake, latencyMs: {latency_ms}}}
              dataPath: no-router
              networks:
                - {{name: internal, cidr: {cidr}}}
              securityGroups:
                - name: web
                  rules:
                    - {{direction: ingress, protocol: tcp, ports: "8000-8010", remote: 0.0.0.0/0}}
              loadBalancers:
                - {{name: root, type: shared, network: internal, securityGroups: [web]}}
              vms:
            """
        )
        + lines
    )
    return path


def fake_object_count(state_dir: Path, name: str) -> int:
    """Objects of cloudlet ``name`` in the simulated cloud, read without the
    CLI (cheap enough to poll every few milliseconds); 0 before it exists."""
    from cloudlet.providers.fake import FakeCloud

    db = state_dir / "fake-cloud.db"
    if not db.exists():
        return 0
    try:
        cloud = FakeCloud(db)
        try:
            return len(cloud.list_objects(name))
        finally:
            cloud.close()
    except Exception:  # the sync is still creating the schema
        return 0
