"""Issue 11, "plans that say more": creates show what they build, drift and
pending revisions show attribute, actual and desired; the last observation
is stored for ``plan --offline``; ``list`` rows come from the records."""

from __future__ import annotations

import io
from pathlib import Path

from helpers import as_observed, cloudlet
from rich.console import Console

from cloudlet.cmd.byname import list_rows, offline_json, offline_plan, synced_expansion
from cloudlet.cmd.render import print_plan, print_status
from cloudlet.model.codec import unstructure
from cloudlet.model.expand import Expansion, expand
from cloudlet.model.ports import PortMapping
from cloudlet.model.resources import Observed, Resource
from cloudlet.model.spec import Vm
from cloudlet.planner import plan_actions
from cloudlet.shepherd.codec import status_from_json, status_to_json
from cloudlet.shepherd.status import AttrDiff, build_status
from cloudlet.store.records import ObservedRecord, StateRepo, SyncRecord
from cloudlet.store.sqlite import open_store

VM = Resource("vm/game", {"image": "game-v1", "flavor": "m1.small", "ports": ("port/game",)})
SUBNET = Resource("subnet/internal", {"network": "network/internal", "cidr": "10.10.0.0/24"})
LISTENER = Resource(
    "lb-listener/root.chat.tcp.443",
    {"protocol": "tcp", "port": 443, "publicPort": 10000, "targets": ("vm/chat",)},
)


def text_of(render: object, *args: object) -> str:
    out = io.StringIO()
    render(Console(file=out, width=300, color_system=None), *args)  # type: ignore[operator]
    return out.getvalue()


# -- plans ----------------------------------------------------------------------------


def test_a_create_shows_its_key_attributes_and_a_listener_its_public_port() -> None:
    plan = plan_actions("c", [VM, SUBNET, LISTENER], [])
    text = text_of(print_plan, plan)
    vm_line = next(line for line in text.splitlines() if "vm/game" in line)
    assert "image game-v1" in vm_line and "flavor m1.small" in vm_line, text
    assert "cidr 10.10.0.0/24" in next(ln for ln in text.splitlines() if "subnet/" in ln)
    listener = next(line for line in text.splitlines() if "lb-listener/" in line)
    assert "tcp/443 → public port 10000 (remapped)" in listener, text


def test_plan_json_carries_a_creates_attrs_and_an_updates_changes() -> None:
    created = {a["id"]: a for a in plan_actions("c", [VM, LISTENER], []).to_json()["actions"]}
    assert created["vm/game"]["attrs"] == {
        "flavor": "m1.small",
        "image": "game-v1",
        "ports": ["port/game"],
    }
    assert created["lb-listener/root.chat.tcp.443"]["attrs"]["publicPort"] == 10000
    assert "changes" not in created["vm/game"]

    seen = as_observed([VM], {"vm/game": {"flavor": "m1.tiny"}})
    (update,) = plan_actions("c", [VM], seen).to_json()["actions"]
    assert update["op"] == "update" and "attrs" not in update
    assert update["changes"] == [{"attr": "flavor", "actual": "m1.tiny", "desired": "m1.small"}]


# -- status: drift by attribute, pending revisions ------------------------------------

EXPANSION = Expansion("c", (VM,), ())
SYNCED = SyncRecord(3, "converged", "converged", 1000.0, 0.5)


def test_drift_names_the_attribute_its_actual_and_desired_value() -> None:
    seen = as_observed([VM], {"vm/game": {"flavor": "m1.tiny"}})
    status = build_status(EXPANSION, seen, at=1060.0, last_sync=SYNCED, desired_revision=3)
    (vm,) = status.resources
    assert vm.state == "drifted" and vm.differs == ("flavor",)
    assert vm.changes == (AttrDiff("flavor", "m1.tiny", "m1.small"),)
    assert status.drift == ("vm/game",) and status.pending == ()
    data = status_to_json(status)
    assert data["resources"][0]["changes"] == [
        {"attr": "flavor", "actual": "m1.tiny", "desired": "m1.small"}
    ]
    assert status_from_json(data) == status
    text = text_of(print_status, status)
    assert "drift vm/game: flavor is m1.tiny, desired m1.small" in text, text
    # The last sync's revision and time (and age against the observation).
    assert "revision 3" in text and "1970-01-01 00:16:40 UTC (60 s ago)" in text, text


def test_a_stored_revision_not_synced_yet_is_pending_not_drift() -> None:
    new = Resource("vm/game", {**VM.attrs, "flavor": "m1.large"})
    other = Resource("vm/extra", {"image": "x", "flavor": "m1.small", "ports": ()})
    seen = as_observed([VM], {"vm/game": {}})
    drifted_before = Resource("vm/gone", {"image": "x", "flavor": "f", "ports": ()})
    synced = Expansion("c", (VM, drifted_before), ())
    status = build_status(
        Expansion("c", (new, other, drifted_before), ()),
        seen,
        at=2000.0,
        last_sync=SYNCED,
        desired_revision=5,
        synced=synced,
    )
    by_id = {r.id: r for r in status.resources}
    assert by_id["vm/game"].state == "pending"  # matches revision 3, not yet 5
    assert by_id["vm/game"].changes == (AttrDiff("flavor", "m1.small", "m1.large"),)
    assert by_id["vm/extra"].state == "pending"  # new in revision 5
    assert by_id["vm/gone"].state == "missing"  # missing under revision 3 too: drift
    assert status.drift == ("vm/gone",)
    assert status.pending == ("vm/extra", "vm/game")
    ready = status.condition("Ready")
    assert ready is not None and not ready.ok and ready.reason == "Drifted"
    assert "2 resources to change once the stored revision is synced" in ready.message
    data = status_to_json(status)
    assert data["pending"] == ["vm/extra", "vm/game"] and data["desiredRevision"] == 5
    assert status_from_json(data) == status
    text = text_of(print_status, status)
    assert "pending: desired revision 5 is stored, not synced yet (last synced: revision 3)" in (
        text
    ), text
    assert "pending vm/game: flavor is m1.small, desired m1.large" in text
    assert "pending vm/extra: to be created" in text
    assert "drift vm/gone: missing" in text


def test_only_pending_changes_leave_ready_false_for_pending_not_degraded() -> None:
    new = Resource("vm/game", {**VM.attrs, "flavor": "m1.large"})
    failed = SyncRecord(3, "failed", "1 actions failed", 1000.0)
    status = build_status(
        Expansion("c", (new,), ()),
        as_observed([VM]),
        at=2000.0,
        last_sync=failed,
        desired_revision=5,
        synced=EXPANSION,
    )
    assert status.drift == () and status.pending == ("vm/game",)
    ready, degraded = status.condition("Ready"), status.condition("Degraded")
    assert ready is not None and ready.reason == "Pending" and not ready.ok
    assert degraded is not None and not degraded.ok  # a pending change is no failure


def test_never_synced_everything_that_differs_is_pending() -> None:
    status = build_status(EXPANSION, [], at=1.0, last_sync=None, desired_revision=2)
    assert status.pending == ("vm/game",) and status.drift == ()
    assert "never synced" in text_of(print_status, status)


def test_without_a_desired_revision_status_is_as_before() -> None:
    # The engine's own status after a sync: nothing is pending, drift is drift.
    status = build_status(EXPANSION, [], at=1.0, last_sync=SYNCED)
    assert status.drift == ("vm/game",) and status.pending == ()
    assert "pending" not in status_to_json(status)


# -- the stored observation and plan --offline ----------------------------------------


def repo_in(tmp_path: Path) -> StateRepo:
    return StateRepo(open_store(tmp_path))


def test_the_observation_is_stored_read_back_and_forgotten(tmp_path: Path) -> None:
    repo = repo_in(tmp_path)
    objs = (
        Observed("u1", "vm/game", "vm", {"flavor": "m1.small", "ports": ("port/game",)}, ()),
        Observed("u2", None, "port", {}, ("subnet/x",)),
    )
    repo.put_observed("c", ObservedRecord(objs, 12.5, 7))
    assert repo.get_observed("c") == ObservedRecord(objs, 12.5, 7)
    repo.forget("c")
    assert repo.get_observed("c") is None


def test_an_offline_plan_is_made_against_the_stored_observation(tmp_path: Path) -> None:
    repo = repo_in(tmp_path)
    spec = cloudlet()
    desired = expand(spec).resources
    seen = as_observed(desired, {"vm/game": {"flavor": "m1.tiny"}})
    repo.put_observed(spec.name, ObservedRecord(tuple(seen), 100.0, 4))
    plan, observed = offline_plan(repo, spec, "here")
    assert [(a.op, a.id) for a in plan.actions] == [("update", "vm/game")]
    doc = offline_json(plan, observed, now=160.0)
    assert doc["actions"][0]["changes"][0]["attr"] == "flavor"
    assert doc["offline"]["ageSeconds"] == 60.0
    assert doc["offline"]["observedRevision"] == 4
    assert doc["offline"]["unknown"]  # says what it cannot know


def test_list_rows_come_from_the_desired_and_sync_records(tmp_path: Path) -> None:
    repo = repo_in(tmp_path)
    document = {"apiVersion": "cloudlet/v1", "kind": "Cloudlet", "metadata": {"name": "b"}}
    rev_a = repo.put_desired("a", document, at=1.0)
    rev_b = repo.put_desired("b", document, at=2.0)
    repo.put_sync("a", SyncRecord(rev_a, "converged", "converged", 5.0))
    expansion = Expansion("a", (), (PortMapping("root", "x", "tcp", 1, 1),))
    status = build_status(expansion, [], at=5.0, last_sync=repo.get_sync("a"))
    repo.put_status("a", status_to_json(status))
    rows = list_rows(repo)
    assert [r["name"] for r in rows] == ["a", "b"]
    a, b = rows
    assert (a["desiredRevision"], a["syncedRevision"]) == (rev_a, rev_a)
    assert a["lastSync"]["outcome"] == "converged" and (a["ready"], a["reason"]) == (
        "True",
        "Converged",
    )
    assert (b["desiredRevision"], b["syncedRevision"], b["lastSync"]) == (rev_b, None, None)
    assert (b["ready"], b["reason"]) == ("False", "Pending")


def test_a_status_baseline_is_expanded_only_while_a_newer_revision_waits(
    tmp_path: Path,
) -> None:
    """``status`` compares with the last synced revision only while a newer
    one is stored; synced at the stored revision, it expands nothing more
    (issue 13: the same revision expanded twice in every status)."""
    repo = repo_in(tmp_path)
    synced = cloudlet()
    rev = repo.put_desired(synced.name, unstructure(synced), at=1.0)
    repo.put_sync(synced.name, SyncRecord(rev, "converged", "converged", 2.0))
    assert synced_expansion(repo, synced) is None
    newer = cloudlet(vms=[Vm("game", "internal", image="game-v2")])
    repo.put_desired(newer.name, unstructure(newer), at=3.0)
    baseline = synced_expansion(repo, newer)
    assert baseline is not None and baseline.resources == expand(synced).resources
