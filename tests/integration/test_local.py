"""The ``local`` platform for real: network namespaces, bridges, haproxy and
nginx on this host, and traffic from the host to the public addresses that
``status`` reports (inside the 198.18.0.0/15 range the platform routes to its
own namespaces, nothing else). Needs root; every test leaves the host as it
found it, also when it fails (the fixture destroys, then removes whatever of
this test's namespaces and links is left)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import cli, describe, ok
from localsite import (  # noqa: F401 - local_site is the fixture `site`
    Site,
    answers,
    host_state,
    local_site,
    spec,
    status,
    sync,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


def test_every_port_mapping_answers_with_its_target(site: Path, tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(spec("edge-a"))
    sync(site, path)
    mappings = status(site, "edge-a")["portMappings"]
    assert isinstance(mappings, list) and len(mappings) == 3
    remapped = [m for m in mappings if m["publicPort"] != m["port"]]
    assert [m["target"] for m in remapped] == ["chat"], mappings  # the second claimant of 443
    for mapping in mappings:
        assert answers(mapping) == f"vm/{mapping['target']}", mapping
    ok(cli("plan", path, state_dir=site), 0)
    reachable = _condition(status(site, "edge-a"), "Reachable")
    assert reachable["status"] == "True", reachable


def test_reachable_says_which_mapping_does_not_answer(site: Path, tmp_path: Path) -> None:
    """Shepherd probes every mapping from the host; a back-end that stopped
    answering (its process killed behind our back) makes Reachable False."""
    path = tmp_path / "a.yaml"
    path.write_text(spec("edge-f"))
    sync(site, path)
    s = Site(site / "local", "edge-f")
    chat = next(r for r in s.records.all() if r.id == "vm/chat")
    subprocess.run(["kill", "-9", str(chat.run["backend"])], check=True)
    reachable = _condition(status(site, "edge-f"), "Reachable")
    assert reachable["status"] == "False", reachable
    assert "tcp/10000 (chat)" in reachable["message"], reachable
    sync(site, path)  # heals: the VM was broken
    assert _condition(status(site, "edge-f"), "Reachable")["status"] == "True"


def _condition(doc: dict[str, object], kind: str) -> dict[str, str]:
    conditions = doc["conditions"]
    assert isinstance(conditions, list)
    return next(c for c in conditions if c["type"] == kind)


def test_a_deleted_lb_vm_namespace_is_drift_and_healed(site: Path, tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(spec("edge-b"))
    sync(site, path)
    s = Site(site / "local", "edge-b")
    lb_vm = next(r for r in s.records.all() if r.id == "vm/root.0")
    subprocess.run(["ip", "netns", "pids", s.ns(lb_vm.uid)], capture_output=True, check=True)
    pids = subprocess.run(["ip", "netns", "pids", s.ns(lb_vm.uid)], capture_output=True, text=True)
    for pid in pids.stdout.split():
        subprocess.run(["kill", pid], check=False)
    subprocess.run(["ip", "netns", "del", s.ns(lb_vm.uid)], check=True)
    drifted = status(site, "edge-b")
    assert "vm/root.0" in drifted["drift"] and "lb/root" in drifted["drift"], drifted["drift"]
    plan = ok(cli("plan", path, state_dir=site), 2).stdout
    assert "broken" in plan, plan
    sync(site, path)
    for mapping in status(site, "edge-b")["portMappings"]:  # type: ignore[union-attr]
        assert answers(mapping) == f"vm/{mapping['target']}", mapping


def test_two_cloudlets_at_once_and_destroy_leaves_the_host_as_it_was(
    site: Path, tmp_path: Path
) -> None:
    before = host_state(site)
    for name, cidr in (("edge-c", "10.62.0.0/24"), ("edge-d", "10.62.0.0/24")):
        path = tmp_path / f"{name}.yaml"
        path.write_text(spec(name, cidr=cidr))
        sync(site, path)
    c, d = status(site, "edge-c"), status(site, "edge-d")
    ips = (
        {str(m["publicIp"]) for m in c["portMappings"]},
        {  # type: ignore[union-attr]
            str(m["publicIp"])
            for m in d["portMappings"]  # type: ignore[union-attr]
        },
    )
    assert len(ips[0]) == 1 and len(ips[1]) == 1 and ips[0] != ips[1], ips
    for doc in (c, d):
        for mapping in doc["portMappings"]:  # type: ignore[union-attr]
            assert answers(mapping) == f"vm/{mapping['target']}", mapping
    assert host_state(site) != before
    for name in ("edge-c", "edge-d"):
        proc = ok(cli("destroy", name, "--yes", state_dir=site, timeout=120))
        assert "converged" in proc.stdout, describe(proc)
    assert host_state(site) == before


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _orphan_game(
    site: Path, tmp_path: Path, name: str, *, forget: bool = False
) -> tuple[Path, int]:
    """Sync, then ``ip netns del`` game's namespace and nothing else: its
    back-end keeps running (and keeps the namespace alive, unnamed). With
    ``forget``, its record loses the back-end's pid first, as when a create
    is cut off between starting it and recording it."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(spec(name))
    sync(site, path)
    s = Site(site / "local", name)
    game = next(r for r in s.records.all() if r.id == "vm/game")
    pid = int(game.run["backend"])
    if forget:
        del game.run["backend"]
        s.records.put(game)
    assert str(pid) in host_state(site)["procs"]  # the snapshot would see it left behind
    subprocess.run(["ip", "netns", "del", s.ns(game.uid)], check=True)
    assert _alive(pid)
    assert "vm/game" in status(site, name)["drift"]  # type: ignore[operator]
    return path, pid


def test_a_vm_namespace_deleted_under_its_backend_is_healed_without_a_leak(
    site: Path, tmp_path: Path
) -> None:
    path, pid = _orphan_game(site, tmp_path, "edge-g")
    sync(site, path)
    assert not _alive(pid), "the old back-end still runs"
    assert status(site, "edge-g")["drift"] == []
    for mapping in status(site, "edge-g")["portMappings"]:  # type: ignore[union-attr]
        assert answers(mapping) == f"vm/{mapping['target']}", mapping


@pytest.mark.parametrize("forget", [False, True], ids=["recorded", "unrecorded"])
def test_a_vm_namespace_deleted_under_its_backend_then_destroyed_leaves_nothing(
    site: Path, tmp_path: Path, forget: bool
) -> None:
    before = host_state(site)
    _path, pid = _orphan_game(site, tmp_path, "edge-h", forget=forget)
    ok(cli("destroy", "edge-h", "--yes", state_dir=site, timeout=120))
    assert not _alive(pid), "the back-end outlived destroy"
    assert host_state(site) == before


def test_destroy_right_after_vm_namespaces_were_lost_leaves_the_host_as_it_was(
    site: Path, tmp_path: Path
) -> None:
    """A VM whose namespace is gone is not observed (the next sync re-creates
    it on its record), so a destroy does not see it: the provider still
    takes down what it left and its record, and the fabric goes."""
    path = tmp_path / "a.yaml"
    path.write_text(spec("edge-i"))
    before = host_state(site)
    sync(site, path)
    s = Site(site / "local", "edge-i")
    for vm in (r for r in s.records.all() if r.kind == "vm"):
        ns = s.ns(vm.uid)
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
        for pid in pids.stdout.split():
            subprocess.run(["kill", "-9", pid], check=False)
        subprocess.run(["ip", "netns", "del", ns], check=True)
    assert {"vm/game", "vm/chat", "vm/root.0"} <= set(status(site, "edge-i")["drift"])  # type: ignore[arg-type]
    proc = ok(cli("destroy", "edge-i", "--yes", state_dir=site, timeout=120))
    assert "converged" in proc.stdout, describe(proc)
    assert s.records.all() == []
    assert host_state(site) == before
