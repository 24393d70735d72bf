"""Issue 11's small inconsistencies on the real command line: ``fake ls`` of
an unknown cloudlet, ``graph`` of a file of several or of an empty plan,
``export heat`` of a spec for another platform, destroy's listed reasons.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import EXAMPLES, NO_ROUTER, ROUTER, cli, describe, fake_ls_unknown, ok


def one_line(proc: subprocess.CompletedProcess[str], *names: str) -> str:
    ok(proc, 1)
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("cloudlet: "), describe(proc)
    for name in names:
        assert name in line, describe(proc)
    return line


def test_fake_ls_unknown_refuses_a_stored_one_lists_nothing(state_dir: Path) -> None:
    """Before: ``[]`` and exit 0 for a name nothing knows (a typo read as
    "synced and destroyed")."""
    fake_ls_unknown(state_dir, "berlin-1")
    ok(cli("fake", "ls", "berlin-1", state_dir=state_dir), 1)  # human output too
    ok(cli("apply", NO_ROUTER, state_dir=state_dir))
    # stored, not synced yet: it owns nothing at the site, rightly
    assert json.loads(ok(cli("fake", "ls", "berlin-1", "--json", state_dir=state_dir)).stdout) == []
    assert ok(cli("fake", "ls", "berlin-1", state_dir=state_dir)).stdout == ""


def test_destroy_lists_its_deletes_as_a_destroy(state_dir: Path) -> None:
    ok(cli("sync", NO_ROUTER, "--yes", state_dir=state_dir))
    proc = ok(cli("destroy", "berlin-1", "--yes", state_dir=state_dir))
    listed = [line for line in proc.stdout.splitlines() if line.lstrip().startswith("- ")]
    assert listed, describe(proc)
    assert all(line.endswith("cloudlet destroyed") for line in listed), describe(proc)
    assert "not in the desired state" not in proc.stdout
    assert "(converged)" not in proc.stdout, describe(proc)


def two_cloudlets(tmp_path: Path) -> Path:
    path = tmp_path / "two.yaml"
    path.write_text(NO_ROUTER.read_text() + "---\n" + ROUTER.read_text())
    return path


def test_graph_of_several_cloudlets_needs_one_named(tmp_path: Path, state_dir: Path) -> None:
    """Before: the first cloudlet was drawn and the others silently dropped."""
    both = two_cloudlets(tmp_path)
    out = tmp_path / "g.dot"
    one_line(cli("graph", both, "-o", out, state_dir=state_dir), "berlin-1, munich-2", "--cloudlet")
    assert not out.exists()
    ok(cli("graph", both, "--cloudlet", "munich-2", "-o", out, state_dir=state_dir))
    dot = out.read_text()
    assert dot.startswith('digraph "munich-2"') and "router/munich-2" in dot
    one_line(cli("graph", both, "--cloudlet", "paris-3", state_dir=state_dir), "'paris-3'")


def test_graph_of_an_empty_plan_draws_nothing(tmp_path: Path, state_dir: Path) -> None:
    """Before: a blank picture (a digraph with no nodes) was written."""
    ok(cli("sync", NO_ROUTER, "--yes", state_dir=state_dir))
    out = tmp_path / "g.dot"
    proc = ok(cli("graph", NO_ROUTER, "-o", out, state_dir=state_dir))
    assert proc.stderr.strip() == "nothing to change for berlin-1; drawing nothing"
    assert not out.exists()
    proc = ok(cli("graph", NO_ROUTER, state_dir=state_dir))
    assert proc.stdout == ""


def test_export_heat_refuses_a_vsphere_or_local_spec(tmp_path: Path, state_dir: Path) -> None:
    """Before: a template for an OpenStack site, from a vSphere spec, silently."""
    out = tmp_path / "stack.yaml"
    for example, name, platform in (
        ("vsphere.yaml", "vsphere-1", "vsphere"),
        ("local.yaml", "edge-local", "local"),
    ):
        line = one_line(
            cli("export", "heat", EXAMPLES / example, "-o", out, state_dir=state_dir), name
        )
        assert f"its platform is {platform}" in line and "OpenStack" in line
        assert not out.exists()
    ok(cli("export", "heat", EXAMPLES / "openstack.yaml", "-o", out, state_dir=state_dir))
    assert "heat_template_version" in out.read_text()
