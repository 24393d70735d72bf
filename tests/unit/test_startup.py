"""Start-up: the commands that do little load little (issue 11).

``--version``, ``--help`` and ``validate`` must not import a cloud's SDK, the
etcd client, prometheus_client, rich, networkx, the planner or the engine:
each run is a fresh interpreter, since the test process has them all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = (
    "openstack",
    "keystoneauth1",
    "pyVmomi",
    "grpc",
    "pyetcd",
    "prometheus_client",
    "rich",
    "networkx",
    "cloudlet.planner",
    "cloudlet.engine",
    "cloudlet.store",
    "cloudlet.shepherd",
)

PROBE = """
import contextlib, io, json, sys
from cloudlet.cmd.main import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    try:
        code = main(sys.argv[1:])
    except SystemExit as stop:
        code = stop.code
loaded = sorted({m.split(".")[0] if not m.startswith("cloudlet.") else ".".join(m.split(".")[:2])
                 for m in sys.modules})
print(json.dumps({"code": code, "loaded": loaded, "out": out.getvalue()}))
"""


def run(*argv: str) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


@pytest.mark.parametrize(
    "argv",
    [
        ["--version"],
        ["--help"],
        ["plan", "--help"],
        ["sync", "--help"],
        ["validate", "examples/openstack.yaml", "examples/vsphere.yaml"],
    ],
    ids=" ".join,
)
def test_light_commands_load_no_heavy_library(argv: list[str]) -> None:
    result = run(*argv)
    assert result["code"] == 0
    assert result["out"], "the command printed nothing"
    loaded = set(result["loaded"])  # type: ignore[arg-type]
    assert not loaded & set(HEAVY), f"{' '.join(argv)} loaded {sorted(loaded & set(HEAVY))}"


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["sync", "--help"]], ids=" ".join)
def test_version_and_help_do_not_even_load_the_model(argv: list[str]) -> None:
    loaded = set(run(*argv)["loaded"])  # type: ignore[arg-type]
    assert not loaded & {"yaml", "cattrs", "cloudlet.model"}


FAKE = """\
apiVersion: cloudlet/v1
kind: Cloudlet
metadata: {name: startup}
spec:
  platform: {type: fake}
  networks: [{name: internal, cidr: 10.9.0.0/24}]
  vms: [{name: one, network: internal}]
"""


def test_the_probe_sees_a_heavy_import(tmp_path: Path) -> None:
    """The check above can fail: a command that plans does load the planner."""
    spec = tmp_path / "fake.yaml"
    spec.write_text(FAKE)
    result = run("--state-dir", str(tmp_path / "state"), "plan", str(spec))
    assert result["code"] == 2  # changes pending
    loaded = set(result["loaded"])  # type: ignore[arg-type]
    assert {"cloudlet.planner", "networkx"} <= loaded
