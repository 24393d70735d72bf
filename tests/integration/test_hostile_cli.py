"""Hostile input through the CLI: located errors, no crash, no effect.

For ``validate``, ``plan`` and ``sync --yes`` every bad file must give exit
status 1, stderr lines ``FILE:LINE:COL: message`` (a one-line message for a
missing file or a directory), no traceback, a quick answer, and no change at
all to the state directory of an already synced cloudlet.
"""

from __future__ import annotations

import hashlib
import random
import re
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import NO_ROUTER, ROUTER, cli, describe, fake_ls, fake_ls_unknown, ok

EXAMPLE = NO_ROUTER.read_text()
MAX_SECONDS = 5.0  # per call, wall; the CLI needs well under a second


def edit(old: str, new: str) -> str:
    assert old in EXAMPLE, old
    return EXAMPLE.replace(old, new, 1)


def billion_laughs(levels: int = 9) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        refs = ", ".join([f"*l{i - 1}"] * 9)
        lines.append(f"l{i}: &l{i} [{refs}]")
    return "\n".join(lines) + "\n"


def hostile_files(marker: Path) -> dict[str, str | bytes]:
    """Name -> content. Every one of them derives from the no-router example
    (cloudlet ``berlin-1``) or is not a cloudlet at all."""
    return {
        "malformed.yaml": "apiVersion: cloudlet/v1\nkind: [Cloudlet\nmetadata: {name: x}\n",
        "bad-indent.yaml": edit("  dataPath: no-router\n", "   dataPath: no-router\n"),
        "duplicate-key.yaml": edit(
            "  dataPath: no-router\n", "  dataPath: no-router\n  dataPath: router\n"
        ),
        "wrong-type.yaml": edit("masters: 1", 'masters: "lots"'),
        "wrong-type-list.yaml": edit("securityGroups: [admin]", "securityGroups: admin"),
        "not-a-mapping.yaml": "- just\n- a list\n",
        "unknown-field.yaml": edit(
            "  dataPath: no-router\n", "  dataPath: no-router\n  colour: blue\n"
        ),
        "bad-api-version.yaml": edit("apiVersion: cloudlet/v1", "apiVersion: cloudlet/v9"),
        "bad-name.yaml": edit("name: berlin-1", "name: Berlin_1!"),
        "bad-cidr.yaml": edit("10.20.0.0/24", "10.20.0.300/24"),
        "bad-port.yaml": edit("port: 8443", "port: 70000"),
        "bad-protocol.yaml": edit("{protocol: tcp, port: 8443}", "{protocol: sctp, port: 8443}"),
        "dangling-network.yaml": edit(
            "    - name: api\n      network: internal", "    - name: api\n      network: nowhere"
        ),
        "dangling-lb.yaml": edit("loadBalancer: edge-api", "loadBalancer: nope"),
        "dangling-sg.yaml": edit(
            "securityGroups: [admin]\n      expose", "securityGroups: [nope]\n      expose"
        ),
        "duplicate-name.yaml": edit("    - name: chat\n", "    - name: game\n"),
        "duplicate-port.yaml": edit(
            "ports: [{protocol: tcp, port: 8443}]",
            "ports: [{protocol: tcp, port: 8443}, {protocol: tcp, port: 8443}]",
        ),
        "overlapping-networks.yaml": edit(
            "    - {name: internal, cidr: 10.20.0.0/24}\n",
            "    - {name: internal, cidr: 10.20.0.0/24}\n"
            "    - {name: other, cidr: 10.20.0.128/25}\n",
        ),
        "billion-laughs.yaml": billion_laughs(),
        "python-tag.yaml": edit(
            "  labels: {region: eu-central, tier: edge}\n",
            f'  labels: !!python/object/apply:os.system ["touch {marker}"]\n',
        ),
        "python-tag-top.yaml": f'!!python/object/apply:os.system ["touch {marker}"]\n',
        "huge.yaml": edit(
            "labels: {region: eu-central, tier: edge}",
            "labels: {region: eu-central, blob: " + "x" * (5 * 1024 * 1024) + "}",
        ),
        "binary.yaml": random.Random(7).randbytes(4096),
        "nul-byte.yaml": edit("kind: Cloudlet\n", "kind: Cloud\x00let\n"),
        "empty.yaml": "",
    }


#: The same security group listed twice on one load balancer.
DUPLICATE_REF = edit(
    "securityGroups: [web]}\n    - {name: edge-api",
    "securityGroups: [web, web]}\n    - {name: edge-api",
)

LOCATED = r"^{path}:\d+:\d+: \S"


class Hostile:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.marker = root / "pwned"
        self.files: list[Path] = []
        for name, content in hostile_files(self.marker).items():
            path = root / name
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
            self.files.append(path)
        self.missing = root / "missing.yaml"
        self.directory = root / "a-directory.yaml"
        self.directory.mkdir()

    @property
    def all(self) -> list[Path]:
        return [*self.files, self.missing, self.directory]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Hostile:
    return Hostile(tmp_path_factory.mktemp("hostile"))


def timed(call: Callable[[], subprocess.CompletedProcess[str]]) -> tuple[Any, float]:
    t0 = time.monotonic()
    proc = call()
    return proc, time.monotonic() - t0


def problems_with(path: Path, proc: subprocess.CompletedProcess[str], took: float) -> list[str]:
    """What is wrong with one failed command on ``path`` (empty: all good)."""
    found = []
    if proc.returncode != 1:
        found.append(f"exit {proc.returncode}, expected 1")
    if "Traceback" in proc.stdout + proc.stderr or "internal error" in proc.stderr:
        found.append("crashed")
    if took >= MAX_SECONDS:
        found.append(f"took {took:.1f} s")
    lines = proc.stderr.splitlines()
    if not lines:
        found.append("nothing on stderr")
    if path.exists() and path.is_file():
        pattern = re.compile(LOCATED.format(path=re.escape(str(path))))
        found += [f"unlocated stderr line {line!r}" for line in lines if not pattern.match(line)]
    else:  # missing file or directory: one clear line naming it
        if len(lines) != 1 or str(path) not in lines[0]:
            found.append(f"expected one line naming the file, got {lines!r}")
    if found:
        found.append(describe(proc)[:2000])
    return found


def snapshot(state_dir: Path) -> dict[str, Any]:
    """Everything a hostile command must leave alone."""
    digests = {
        name: hashlib.sha256((state_dir / name).read_bytes()).hexdigest()
        for name in ("state.db", "fake-cloud.db")
    }
    return {
        "digests": digests,
        "get": ok(cli("get", "munich-2", state_dir=state_dir)).stdout,
        "fake": fake_ls(state_dir, "munich-2"),
    }


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state_dir = tmp_path_factory.mktemp("synced")
    ok(cli("sync", ROUTER, "--yes", state_dir=state_dir))
    return state_dir


def test_validate_many_hostile_files_in_one_call(hostile: Hostile, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    proc, took = timed(lambda: cli("validate", *hostile.all, state_dir=state_dir))
    ok(proc, 1)
    assert took < MAX_SECONDS * 3, took
    located = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): \S")
    reported: dict[str, list[str]] = {}
    for line in proc.stderr.splitlines():
        m = located.match(line)
        name = m["file"] if m else line.split(":", 1)[0]
        reported.setdefault(name, []).append(line)
    missing = [str(p) for p in hostile.all if str(p) not in reported]
    assert not missing, f"no problem reported for {missing}\n{describe(proc)}"
    assert set(reported) == {str(p) for p in hostile.all}, describe(proc)
    for path in (hostile.missing, hostile.directory):
        assert len(reported[str(path)]) == 1, reported[str(path)]
    assert proc.stdout.strip() == "", describe(proc)  # no file is valid
    assert not hostile.marker.exists()
    assert not state_dir.exists()  # validate needs no store


@pytest.mark.parametrize("command", [("plan", "--json"), ("sync", "--yes")])
def test_plan_and_sync_reject_hostile_files_and_change_nothing(
    command: tuple[str, ...], hostile: Hostile, synced: Path
) -> None:
    before = snapshot(synced)
    verb, *flags = command

    def run(path: Path) -> tuple[Path, subprocess.CompletedProcess[str], float]:
        proc, took = timed(lambda: cli(verb, path, *flags, state_dir=synced, timeout=30))
        return path, proc, took

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(run, hostile.all))
    failures = []
    for path, proc, took in results:
        found = problems_with(path, proc, took)
        if found:
            failures.append(f"{path.name}: " + "\n  ".join(found))
    assert not failures, "\n\n".join(failures)
    if verb == "plan" and flags:
        assert all(proc.stdout.strip() == "" for _, proc, _ in results)

    assert not hostile.marker.exists()
    assert snapshot(synced) == before
    # no new cloudlet appeared
    fake_ls_unknown(synced, "berlin-1")
    ok(cli("get", "berlin-1", state_dir=synced), 1)


def test_duplicate_reference_is_rejected(tmp_path: Path, state_dir: Path) -> None:
    """``securityGroups: [web, web]`` names one group twice: an operator's slip
    that must be reported at its line like any other bad reference, not
    expanded into a port carrying the same group twice."""
    path = tmp_path / "duplicate-ref.yaml"
    path.write_text(DUPLICATE_REF)
    line = 1 + DUPLICATE_REF[: DUPLICATE_REF.index("[web, web]")].count("\n")
    failures = []
    for command in (("validate",), ("plan",), ("sync", "--yes")):
        proc, took = timed(lambda c=command: cli(c[0], path, *c[1:], state_dir=state_dir))
        found = problems_with(path, proc, took)
        if not found and f"{path}:{line}:" not in proc.stderr:
            found.append(f"problem not reported at line {line}: {proc.stderr!r}")
        if found:
            failures.append(f"{' '.join(command)}: " + "\n  ".join(found))
    assert not failures, "\n\n".join(failures)
    fake_ls_unknown(state_dir, "berlin-1")
