"""Random valid specs converge in one sync, and plans are deterministic."""

from __future__ import annotations

from harness import World, examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import cloudlets, edits

from cloudlet.model.expand import expand
from cloudlet.model.ports import allocate_ports
from cloudlet.planner import plan_actions

FAST = settings(
    max_examples=examples(40),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FAST
@given(cloudlets())
def test_any_valid_spec_converges_and_then_plans_nothing(cloudlet):
    world = World()
    try:
        report = world.sync(cloudlet)
        assert report.converged, report.message
        assert len(report.plans) <= 1, "one round must be enough from nothing"
        world.assert_converged_to(cloudlet)
        assert world.sync(cloudlet).message == "no changes"
    finally:
        world.close()


@settings(max_examples=examples(100), deadline=None)
@given(cloudlets(), st.randoms(use_true_random=False))
def test_plan_is_deterministic_whatever_the_input_order(cloudlet, rnd):
    desired = list(expand(cloudlet).resources)
    half = plan_actions("x", desired, [])
    shuffled = desired[:]
    rnd.shuffle(shuffled)
    assert plan_actions("x", shuffled, []).to_json() == half.to_json()


@settings(max_examples=examples(100), deadline=None)
@given(st.data())
def test_port_allocations_are_stable_under_edits(data):
    first = data.draw(cloudlets())
    before = allocate_ports(first)
    second = data.draw(edits(first))
    after = allocate_ports(second, before)
    old = {m.key: m.public_port for m in before}
    shared = {lb.name for lb in second.spec.load_balancers if lb.type == "shared"}
    for m in after:
        if m.key in old and m.load_balancer in shared:
            assert m.public_port == old[m.key], m
    # and no two claims of one shared LB share a public port
    slots = [
        (m.load_balancer, m.protocol, m.public_port) for m in after if m.load_balancer in shared
    ]
    assert len(slots) == len(set(slots))
