from __future__ import annotations

import networkx as nx
import pytest
from helpers import as_observed, cloudlet

from cloudlet.errors import PlanError
from cloudlet.model.expand import expand
from cloudlet.model.load import load_text
from cloudlet.model.resources import Observed, Resource
from cloudlet.planner import plan_actions


def ops(plan):
    return {a.id: a.op for a in plan.actions}


def order(plan):
    return list(nx.lexicographical_topological_sort(plan.graph))


def test_nothing_exists_everything_is_created_dependencies_first():
    desired = expand(cloudlet()).resources
    plan = plan_actions("c", desired, [])
    assert set(ops(plan).values()) == {"create"}
    assert len(plan.actions) == len(desired)
    seen = order(plan)
    for r in desired:
        for dep in r.deps:
            assert seen.index(f"create:{dep}") < seen.index(f"create:{r.id}")


def test_converged_state_plans_nothing():
    desired = expand(cloudlet()).resources
    assert plan_actions("c", desired, as_observed(desired)).empty


def test_mutable_change_is_an_update_with_a_reason():
    desired = expand(cloudlet()).resources
    actual = as_observed(desired, {"vm/game": {"flavor": "m1.tiny"}})
    plan = plan_actions("c", desired, actual)
    assert ops(plan) == {"vm/game": "update"}
    assert plan.actions[0].reason == "flavor: m1.tiny → m1.medium"


def test_immutable_change_replaces_and_cascades_to_dependents():
    desired = expand(cloudlet()).resources
    actual = as_observed(desired, {"subnet/internal": {"cidr": "10.99.0.0/24"}})
    plan = plan_actions("c", desired, actual)
    got = ops(plan)
    assert got["subnet/internal"] == "replace"
    assert "forces replacement" in next(a.reason for a in plan.actions if a.id == "subnet/internal")
    for rid in (
        "port/game",
        "vm/game",
        "port/apps.worker.0",
        "k8s-node/apps.worker.0",
        "lb-listener/root.game.tcp.443",
    ):
        assert got[rid] == "replace", rid
    assert "network/internal" not in got
    seen = order(plan)
    # dependents go away before the subnet, and come back after it
    assert seen.index("delete:vm/game") < seen.index("delete:port/game")
    assert seen.index("delete:port/game") < seen.index("delete:subnet/internal")
    assert seen.index("create:subnet/internal") < seen.index("create:port/game")


def test_image_change_replaces_vm_only_and_dependents():
    desired = expand(cloudlet()).resources
    actual = as_observed(desired, {"vm/game": {"image": "game-v0"}})
    got = ops(plan_actions("c", desired, actual))
    assert got == {"vm/game": "replace", "lb-listener/root.game.tcp.443": "replace"}


def test_an_update_the_cloud_cannot_make_in_place_is_a_replacement_with_its_reason():
    desired = expand(cloudlet()).resources
    actual = as_observed(desired, {"vm/game": {"flavor": "m1.large"}})
    assert ops(plan_actions("c", desired, actual)) == {"vm/game": "update"}
    forced = {"vm/game": "a resize cannot shrink the root disk"}
    plan = plan_actions("c", desired, actual, forced)
    assert ops(plan) == {"vm/game": "replace", "lb-listener/root.game.tcp.443": "replace"}
    assert next(a.reason for a in plan.actions if a.id == "vm/game") == (
        "flavor: m1.large → m1.medium (forces replacement: a resize cannot shrink the root disk)"
    )
    # a rule for an id with nothing to change plans nothing
    assert plan_actions("c", desired, as_observed(desired), forced).empty


def test_orphans_are_deleted_dependents_first():
    desired = expand(cloudlet()).resources
    plan = plan_actions("c", [], as_observed(desired))
    assert set(ops(plan).values()) == {"delete"}
    seen = order(plan)
    for r in desired:
        for dep in r.deps:
            assert seen.index(f"delete:{r.id}") < seen.index(f"delete:{dep}")


def test_duplicates_are_deleted_keeping_one():
    desired = expand(cloudlet()).resources
    actual = as_observed(desired)
    vm = next(o for o in actual if o.id == "vm/game")
    actual.append(Observed("uid-zzz", vm.id, vm.kind, dict(vm.attrs), vm.deps))
    plan = plan_actions("c", desired, actual)
    assert [(a.op, a.id) for a in plan.actions] == [("delete", "vm/game")]
    assert "duplicate of" in plan.actions[0].reason


def test_untagged_objects_are_left_alone():
    desired = expand(cloudlet()).resources
    actual = [*as_observed(desired), Observed("foreign", None, "vm", {"image": "x"})]
    assert plan_actions("c", desired, actual).empty


def test_same_inputs_same_plan_whatever_the_observed_order():
    desired = expand(cloudlet()).resources
    actual = as_observed(desired[: len(desired) // 2])
    a = plan_actions("c", desired, actual).to_json()
    b = plan_actions("c", list(reversed(desired)), list(reversed(actual))).to_json()
    assert a == b


def test_dependency_cycle_is_an_error_naming_it():
    a = Resource("vm/a", {"image": "x"}, ("vm/b",))
    b = Resource("vm/b", {"image": "x"}, ("vm/a",))
    with pytest.raises(PlanError, match=r"cycle: create:vm/a → create:vm/b → create:vm/a"):
        plan_actions("c", [a, b], [])


def test_plan_json_shape():
    desired = expand(cloudlet()).resources
    doc = plan_actions("berlin-1", desired, []).to_json()
    assert doc["cloudlet"] == "berlin-1"
    sub = next(a for a in doc["actions"] if a["id"] == "subnet/internal")
    assert sub == {
        "op": "create",
        "id": "subnet/internal",
        "reason": "does not exist",
        "after": ["network/internal"],
        "attrs": {"cidr": "10.10.0.0/24", "network": "network/internal"},  # issue 11
    }


def test_object_still_using_a_replaced_one_is_rebuilt_not_cycled():
    """Found by the state machine: a cluster listener retargeted from masters to
    new workers while the first master's node is replaced planned a cycle."""
    desired = expand(cloudlet()).resources
    actual = []
    for o in as_observed(desired, {"k8s-node/apps.master.0": {"role": "worker"}}):
        if ".worker." in (o.id or ""):
            continue  # the workers are new: the cluster just grew from masters only
        if o.id == "lb-listener/root.apps.tcp.443":
            o = Observed(
                o.uid,
                o.id,
                o.kind,
                {**o.attrs, "targets": ("vm/apps.master.0",)},
                ("lb/root", "vm/apps.master.0", "k8s-node/apps.master.0"),
            )
        actual.append(o)
    plan = plan_actions("c", desired, actual)
    got = ops(plan)
    assert got["k8s-node/apps.master.0"] == "replace"
    assert got["lb-listener/root.apps.tcp.443"] == "replace"
    seen = order(plan)
    assert seen.index("delete:lb-listener/root.apps.tcp.443") < seen.index(
        "delete:k8s-node/apps.master.0"
    )


def test_leave_alone_drops_report_policy_changes_and_what_waits_for_them():
    from cloudlet.planner import leave_alone

    desired = expand(cloudlet()).resources
    missing = {"vm/game", "vm/apps.worker.0", "port/game", "lb-listener/root.game.tcp.443"}
    actual = [o for o in as_observed(desired) if o.id not in missing]
    plan = leave_alone(plan_actions("c", desired, actual), {"port/game"})
    # the VM and listener wait for the left-alone port; the worker does not
    assert ops(plan) == {"vm/apps.worker.0": "create"}
    assert leave_alone(plan, ()) is plan


LB_ON_NET = """\
apiVersion: cloudlet/v1
kind: Cloudlet
metadata: {name: prop}
spec:
  platform: {type: fake}
  dataPath: no-router
  networks: [{name: net-0, cidr: CIDR}]
  loadBalancers: [{name: lb-0, type: shared, network: net-0, redundancy: REDUNDANCY}]
"""


def _lb_cloudlet(cidr: str, redundancy: str) -> list[Resource]:
    text = LB_ON_NET.replace("CIDR", cidr).replace("REDUNDANCY", redundancy)
    return list(expand(load_text(text, "f.yaml")[0]).resources)


def test_a_missing_member_rebuilt_on_a_replaced_subnet_takes_its_lb_along_not_a_cycle():
    """Found by the state machine: the LB's first VM deleted out of band, then
    its subnet's CIDR changed and its redundancy dropped. The LB's update had
    to follow the new VM (on the new subnet) yet precede the old second VM's
    delete (before the subnet's): a cycle. The LB is rebuilt instead, as it
    would be had the VM been there to be replaced."""
    before = [r for r in _lb_cloudlet("10.1.0.0/24", "vip") if r.id != "vm/lb-0.0"]
    plan = plan_actions("prop", _lb_cloudlet("10.0.0.0/24", "none"), as_observed(before))
    got = ops(plan)
    assert got["lb/lb-0"] == "replace"
    assert got["vm/lb-0.0"] == "create" and got["vm/lb-0.1"] == "delete"
    seen = order(plan)
    assert seen.index("delete:lb/lb-0") < seen.index("delete:vm/lb-0.1")
    assert seen.index("create:vm/lb-0.0") < seen.index("create:lb/lb-0")


def test_a_re_created_subnet_rebuilds_what_holds_its_addresses_and_what_is_built_on_them():
    """Found by an adversarial run: a subnet deleted out of band was re-created
    alone; its ports kept addresses from the old pool while the new pool
    started again, so a later port got an address already held."""
    desired = expand(cloudlet()).resources
    on_subnet = {r.id for r in desired if "subnet/internal" in r.deps}
    assert {"port/game", "port/apps.worker.0", "vip/apps"} <= on_subnet
    actual = [o for o in as_observed(desired) if o.id != "subnet/internal"]
    plan = plan_actions("c", desired, actual)
    got = ops(plan)
    assert got["subnet/internal"] == "create"
    for rid in on_subnet:
        assert got[rid] == "replace", rid
        reason = next(a.reason for a in plan.actions if a.id == rid)
        assert reason.startswith("rebuilt with subnet/internal"), reason
    # and what is built on the holders, as for a replacement
    for rid in ("vm/game", "vm/root.0", "lb/root", "k8s-node/apps.worker.0"):
        assert got[rid] == "replace", rid
    for rid in ("network/internal", "security-group/web", "port/root.0.ext"):
        assert rid not in got, rid
    seen = order(plan)
    assert seen.index("create:subnet/internal") < seen.index("create:port/game")
    assert seen.index("delete:vm/game") < seen.index("delete:port/game")
    assert seen.index("create:port/game") < seen.index("create:vm/game")


def test_a_re_created_subnet_with_a_holder_missing_too_creates_that_one():
    desired = expand(cloudlet()).resources
    gone = {"subnet/internal", "port/game"}
    plan = plan_actions("c", desired, [o for o in as_observed(desired) if o.id not in gone])
    got = ops(plan)
    assert got["port/game"] == "create" and got["port/apps.worker.0"] == "replace"


def test_a_re_created_vm_alone_rebuilds_nothing_else():
    """A VM holds no share of anything for its users: its listener names it by id."""
    desired = expand(cloudlet()).resources
    actual = [o for o in as_observed(desired) if o.id != "vm/game"]
    assert ops(plan_actions("c", desired, actual)) == {"vm/game": "create"}
