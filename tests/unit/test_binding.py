"""Bindings (what an approval covers) and saved plans: the pure part of issue 11's
"apply exactly what was approved"."""

from __future__ import annotations

import json

import attrs
import pytest
from helpers import as_observed, cloudlet

from cloudlet.model.expand import expand
from cloudlet.model.resources import Observed, Resource
from cloudlet.planner import plan_actions
from cloudlet.planner.binding import Binding, Mismatch, bind, mismatch, uncovered
from cloudlet.planner.saved import (
    FORMAT,
    SavedPlan,
    SavedPlanError,
    decode,
    encode,
    observation_digest,
)

NAME = "berlin-1"
VM = Resource("vm/x", {"image": "a", "flavor": "m1.medium"}, ("network/n",))
NET = Resource("network/n", {"cidr": "10.0.0.0/24"})


def obs(uid: str, r: Resource, **attrs: object) -> Observed:
    return Observed(uid, r.id, r.kind, {**r.attrs, **attrs}, r.deps)


def test_the_same_state_observed_twice_binds_the_same() -> None:
    a = plan_actions(NAME, [NET, VM], [obs("n1", NET), obs("v1", VM, flavor="m1.small")])
    b = plan_actions(NAME, [NET, VM], [obs("v1", VM, flavor="m1.small"), obs("n1", NET)])
    assert bind(a) == bind(b)
    assert not mismatch(bind(a), bind(b))


def test_what_the_cloud_computes_beyond_the_engine_set_attributes_does_not_count() -> None:
    """Addresses, status, timestamps: a harmless re-observation is the same plan."""
    before = [obs("n1", NET), obs("v1", VM, flavor="m1.small", status="BUILD", updated=1)]
    after = [obs("n1", NET), obs("v1", VM, flavor="m1.small", status="ACTIVE", updated=2)]
    assert bind(plan_actions(NAME, [NET, VM], before)) == bind(plan_actions(NAME, [NET, VM], after))


def test_reworded_reasons_do_not_count() -> None:
    plan = plan_actions(NAME, [NET, VM], [obs("n1", NET)])
    one = bind(plan)
    other = Binding(NAME, {k: attrs.evolve(b, reason="reworded") for k, b in one.actions.items()})
    assert one == other


def test_an_object_deleted_since_approval_is_a_changed_action() -> None:
    approved = bind(plan_actions(NAME, [NET, VM], [obs("n1", NET), obs("v1", VM, flavor="s")]))
    fresh = bind(plan_actions(NAME, [NET, VM], [obs("n1", NET)]))
    diff = mismatch(approved, fresh)
    assert [(was.op, now.op) for was, now in diff.changed] == [("update", "create")]
    assert not diff.added and not diff.removed
    assert diff.lines() == [
        "~ vm/x: approved update vm/x (flavor: s → m1.medium), now create vm/x (does not exist)"
    ]


def test_new_drift_is_an_added_action_and_healed_drift_a_removed_one() -> None:
    approved = bind(plan_actions(NAME, [NET, VM], [obs("n1", NET), obs("v1", VM, flavor="s")]))
    fresh = bind(plan_actions(NAME, [NET, VM], [obs("n1", NET, cidr="x"), obs("v1", VM)]))
    diff = mismatch(approved, fresh)
    assert [b.key for b in diff.added] == ["network/n"]
    assert [b.key for b in diff.removed] == ["vm/x"]
    assert diff.lines()[0].startswith("+ ")
    assert diff.lines()[1].startswith("- ")
    assert "; " in diff.summary()


def test_the_same_op_with_other_values_is_a_changed_action() -> None:
    """Approved: flavor s → m1.medium. Now the VM is at m1.large: another update."""
    approved = bind(plan_actions(NAME, [VM], [obs("v1", VM, flavor="s")]))
    fresh = bind(plan_actions(NAME, [VM], [obs("v1", VM, flavor="m1.large")]))
    assert [b.key for b, _ in mismatch(approved, fresh).changed] == ["vm/x"]


def test_the_same_op_on_another_object_is_a_changed_action() -> None:
    approved = bind(plan_actions(NAME, [VM], [obs("v1", VM, flavor="s")]))
    fresh = bind(plan_actions(NAME, [VM], [obs("v2", VM, flavor="s")]))
    assert mismatch(approved, fresh)


def test_copies_of_one_id_are_actions_of_their_own() -> None:
    approved = bind(plan_actions(NAME, [VM], [obs("v1", VM), obs("v2", VM)]))
    fresh = bind(plan_actions(NAME, [VM], [obs("v1", VM), obs("v2", VM), obs("v3", VM)]))
    assert [b.key for b in mismatch(approved, fresh).added] == ["vm/x@v3"]


def test_an_empty_approval_of_an_empty_plan_matches() -> None:
    assert not mismatch(Binding(NAME, {}), bind(plan_actions(NAME, [VM], [obs("v1", VM)])))


# -- later rounds: only what the approval covers -----------------------------------


def test_a_later_round_may_finish_an_approved_replacement() -> None:
    approved = bind(plan_actions(NAME, [VM], [obs("v1", VM, image="old")], {"vm/x": "no"}))
    assert [b.op for b in approved.actions.values()] == ["replace"]
    create = bind(plan_actions(NAME, [VM], []))
    assert uncovered(approved, create) == ()


def test_a_later_round_may_adjust_what_an_approved_create_built() -> None:
    approved = bind(plan_actions(NAME, [VM], []))
    adjust = bind(plan_actions(NAME, [VM], [obs("new", VM, flavor="s")]))
    assert uncovered(approved, adjust) == ()


def test_a_later_round_may_not_touch_an_object_nobody_approved() -> None:
    approved = bind(plan_actions(NAME, [NET, VM], [obs("n1", NET)]))  # create vm/x only
    fresh = bind(plan_actions(NAME, [NET, VM], [obs("n1", NET, cidr="x"), obs("v", VM)]))
    assert [b.key for b in uncovered(approved, fresh)] == ["network/n"]


def test_a_later_round_may_not_delete_another_copy_than_the_approved_one() -> None:
    approved = bind(plan_actions(NAME, [VM], [obs("v1", VM), obs("v2", VM)]))  # delete v2
    fresh = bind(plan_actions(NAME, [VM], [obs("v1", VM), obs("v3", VM)]))  # delete v3
    assert [b.uid for b in uncovered(approved, fresh)] == ["v3"]


def test_a_later_round_may_not_update_another_object_than_the_approved_one() -> None:
    approved = bind(plan_actions(NAME, [VM], [obs("v1", VM, flavor="s")]))
    fresh = bind(plan_actions(NAME, [VM], [obs("v2", VM, flavor="s")]))
    assert [b.uid for b in uncovered(approved, fresh)] == ["v2"]


def test_a_later_round_may_not_turn_an_approved_update_into_a_replacement() -> None:
    approved = bind(plan_actions(NAME, [VM], [obs("v1", VM, flavor="s")]))
    fresh = bind(plan_actions(NAME, [VM], [obs("v1", VM, flavor="s")], {"vm/x": "cannot"}))
    assert [b.op for b in uncovered(approved, fresh)] == ["replace"]


def test_a_mismatch_of_nothing_is_false() -> None:
    assert not Mismatch()


# -- saved plans --------------------------------------------------------------------


def saved(revision: int | None = 3) -> SavedPlan:
    spec = cloudlet()
    exp = expand(spec, {})
    actual = as_observed(exp.resources[:4])
    plan = plan_actions(spec.name, exp.resources, actual)
    return SavedPlan(spec, revision, observation_digest(actual), bind(plan))


@pytest.mark.parametrize("revision", [3, None])
def test_a_saved_plan_reads_back_as_written(revision: int | None) -> None:
    plan = saved(revision)
    (back,) = decode(encode([plan]), "p.json")
    assert back == plan
    assert back.binding == plan.binding  # attribute values come back as the model's shapes


def test_the_observation_digest_ignores_order_and_sees_every_attribute() -> None:
    a, b = obs("n1", NET), obs("v1", VM)
    assert observation_digest([a, b]) == observation_digest([b, a])
    assert observation_digest([a, b]) != observation_digest([a, obs("v1", VM, status="x")])


def _doc() -> dict[str, object]:
    doc: dict[str, object] = json.loads(encode([saved()]))
    return doc


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{not json", "not JSON"),
        ("[]", "no format field"),
        (json.dumps({"format": "cloudlet-plan/99", "cloudlets": []}), "make it again"),
        (json.dumps({"format": FORMAT, "cloudlets": []}), "holds no cloudlets"),
        (json.dumps({"format": FORMAT, "cloudlets": [{"cloudlet": "x"}]}), "missing field"),
    ],
)
def test_a_bad_saved_plan_is_one_line_naming_the_file(text: str, says: str) -> None:
    with pytest.raises(SavedPlanError) as err:
        decode(text, "p.json")
    message = str(err.value)
    assert message.startswith("p.json") and says in message and "\n" not in message


def test_a_saved_plan_with_a_broken_spec_or_action_is_refused() -> None:
    doc = _doc()
    entry = doc["cloudlets"][0]  # type: ignore[index]
    entry["spec"]["spec"]["dataPath"] = "sideways"
    with pytest.raises(SavedPlanError, match="saved spec is not valid"):
        decode(json.dumps(doc), "p.json")
    doc = _doc()
    doc["cloudlets"][0]["actions"][0]["op"] = "explode"  # type: ignore[index]
    with pytest.raises(SavedPlanError, match="unknown op"):
        decode(json.dumps(doc), "p.json")
    doc = _doc()
    doc["cloudlets"][0]["cloudlet"] = "other"  # type: ignore[index]
    with pytest.raises(SavedPlanError, match="not 'other'"):
        decode(json.dumps(doc), "p.json")
