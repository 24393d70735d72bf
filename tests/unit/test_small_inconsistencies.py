"""Issue 11's small inconsistencies, pinned: destroy's reasons, a
replacement in ``plan --json``, pluralised counts and a summary that does
not repeat its verdict, a lock timeout that names the cloudlet, and
``graph``'s choice of cloudlet.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path

import networkx as nx
import pytest
from harness import World
from helpers import as_observed, cloudlet
from rich.console import Console

from cloudlet.cmd.graphout import pick_cloudlet
from cloudlet.cmd.progress import PlainProgress
from cloudlet.cmd.render import plural, print_sync
from cloudlet.engine.report import StepOutcome, SyncReport
from cloudlet.errors import CloudletError, LockTimeout
from cloudlet.model.expand import expand
from cloudlet.model.resources import Resource
from cloudlet.model.spec import Cloudlet, CloudletSpec, Metadata, Network, Vm
from cloudlet.planner import DESTROYED, UNWANTED, plan_actions
from cloudlet.store.records import cloudlet_lock, lock_name
from cloudlet.store.sqlite import open_store

SPEC = cloudlet(vms=[Vm("game", "internal", image="game-v1")], clusters=[], load_balancers=[])
NAME = SPEC.name


def text_of(draw: object, *args: object) -> str:
    out = io.StringIO()
    draw(Console(file=out, width=300, color_system=None), *args)  # type: ignore[operator]
    return out.getvalue()


@pytest.fixture
def world() -> Iterator[World]:
    w = World()
    yield w
    w.close()


# -- destroy's reasons ----------------------------------------------------------------


def test_deletes_say_why_they_go() -> None:
    owned = as_observed(expand(SPEC).resources)
    edited = plan_actions(NAME, [], owned)
    destroyed = plan_actions(NAME, [], owned, unwanted=DESTROYED)
    assert {a.reason for a in edited.actions} == {UNWANTED}
    assert {a.reason for a in destroyed.actions} == {DESTROYED}
    assert [a.id for a in destroyed.actions] == [a.id for a in edited.actions]


def test_destroy_plans_its_deletes_as_a_destroy(world: World) -> None:
    """Before: every delete of a destroy read "not in the desired state", as
    if the operator had emptied the spec."""
    assert world.sync(SPEC).converged
    report = world.engine().destroy(NAME)
    assert report.converged, report.message
    reasons = {a.reason for plan in report.plans for a in plan.actions}
    assert reasons == {DESTROYED}
    assert world.cloud.observe(NAME) == []


# -- a replacement in plan --json -----------------------------------------------------


def _replaced_subnet() -> list[dict[str, object]]:
    spec = cloudlet(vms=[Vm("game", "internal")], clusters=[], load_balancers=[])
    desired = expand(spec).resources
    moved = [
        Resource(r.id, {**r.attrs, "cidr": "10.11.0.0/24"}, r.deps)
        if r.id == "subnet/internal"
        else r
        for r in desired
    ]
    plan = plan_actions(NAME, moved, as_observed(desired))
    actions: list[dict[str, object]] = plan.to_json()["actions"]
    return actions


def test_replacements_after_lists_have_no_cycle() -> None:
    """Before: ``vm/game`` after ``port/game`` and ``port/game`` after
    ``vm/game`` (the create order and the delete order in one list)."""
    actions = _replaced_subnet()
    replaced = {a["id"] for a in actions if a["op"] == "replace"}
    assert {"subnet/internal", "port/game", "vm/game"} <= replaced
    order = nx.DiGraph()
    order.add_nodes_from(a["id"] for a in actions)  # type: ignore[misc]
    order.add_edges_from((d, a["id"]) for a in actions for d in a["after"])  # type: ignore[attr-defined]
    assert nx.is_directed_acyclic_graph(order), nx.find_cycle(order)
    by_id = {a["id"]: a for a in actions}
    assert by_id["vm/game"]["after"] == ["port/game"]
    assert by_id["port/game"]["after"] == ["subnet/internal"]


def test_a_replacement_is_one_replace_of_its_old_uid_with_two_phases() -> None:
    by_id = {a["id"]: a for a in _replaced_subnet()}
    port = by_id["port/game"]
    assert port["op"] == "replace" and port["uid"] == "uid-port/game"
    assert port["phases"] == [
        {"phase": "delete", "after": ["delete:vm/game"], "uid": "uid-port/game"},
        {"phase": "create", "after": ["create:subnet/internal"]},
    ]
    assert {"op", "id", "reason", "after"} <= set(port)  # DESIGN.md's keys, still there
    creates = [a for a in by_id.values() if a["op"] != "replace"]
    assert all("phases" not in a for a in creates)


# -- counts and verdicts --------------------------------------------------------------


def test_plural() -> None:
    assert plural(1, "step") == "1 step"
    assert plural(0, "step") == "0 steps"
    assert plural(2, "address", "addresses") == "2 addresses"


def step(outcome: str, attempts: int = 1) -> StepOutcome:
    return StepOutcome("vm/game", "create", "create", outcome, 0.0, 0.1, attempts, "boom", 1)


def test_a_converged_summary_does_not_repeat_its_verdict() -> None:
    report = SyncReport(NAME, converged=True, steps=[step("ok")], message="converged")
    line = text_of(print_sync, report).splitlines()[0]
    assert "(converged)" not in line, line
    assert line.startswith(f"{NAME}: converged in ") and line.endswith("; 1 created"), line
    quiet = SyncReport(NAME, converged=True, message="no changes")
    assert "(no changes)" in text_of(print_sync, quiet)


def test_one_attempt_and_one_step_are_singular() -> None:
    failed = SyncReport(NAME, steps=[step("failed", attempts=1)], message="1 failed")
    assert "(after 1 attempt)" in text_of(print_sync, failed)
    retried = SyncReport(NAME, steps=[step("failed", attempts=3)], message="1 failed")
    assert "(after 3 attempts)" in text_of(print_sync, retried)
    out = io.StringIO()
    progress = PlainProgress(Console(file=out, width=200, color_system=None))
    one = plan_actions(NAME, [expand(SPEC).resources[0]], [])
    progress.plan_ready(one, 1)
    assert "round 1: 1 step\n" in out.getvalue()


# -- the lock's message ---------------------------------------------------------------


def test_lock_timeout_names_the_cloudlet_not_its_key(tmp_path: Path) -> None:
    """Before: ``cloudlet sync-berlin-1 is being synced by another process``."""
    store = open_store(tmp_path)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store.lock(lock_name(NAME), 5.0):
            held.set()
            release.wait(5.0)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(5.0)
        with pytest.raises(LockTimeout) as err, cloudlet_lock(store, NAME, 0.2):
            pass
    finally:
        release.set()
        holder.join(5.0)
        store.close()
    message = str(err.value)
    assert message.startswith(f"cloudlet {NAME} is being synced by another process (pid ")
    assert "waited 0.2 s" in message
    assert lock_name(NAME) not in message


def test_an_error_inside_the_lock_is_not_reworded(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    try:
        with pytest.raises(LockTimeout, match=r"^inner$"), cloudlet_lock(store, NAME, 1.0):
            raise LockTimeout("inner")
    finally:
        store.close()


# -- graph: which cloudlet ------------------------------------------------------------


def named(name: str) -> Cloudlet:
    spec = CloudletSpec(networks=[Network("internal", "10.10.0.0/24")])
    return Cloudlet("cloudlet/v1", "Cloudlet", Metadata(name), spec)


def test_graph_picks_the_only_cloudlet_or_the_one_named() -> None:
    a, b = named("edge-1"), named("edge-2")
    assert pick_cloudlet([a], None, "f.yaml") is a
    assert pick_cloudlet([a, b], "edge-2", "f.yaml") is b
    with pytest.raises(CloudletError, match=r"f.yaml holds 2 cloudlets \(edge-1, edge-2\)"):
        pick_cloudlet([a, b], None, "f.yaml")
    with pytest.raises(CloudletError, match="no cloudlet named 'edge-3'"):
        pick_cloudlet([a, b], "edge-3", "f.yaml")
