"""Diff desired against actual and order the result; pure and deterministic."""

from cloudlet.planner.diff import DESTROYED, UNWANTED, Change, diff
from cloudlet.planner.graph import Step, build_graph, remaining_path
from cloudlet.planner.plan import Action, Plan, leave_alone, plan_actions

__all__ = [
    "DESTROYED",
    "UNWANTED",
    "Action",
    "Change",
    "Plan",
    "Step",
    "build_graph",
    "diff",
    "leave_alone",
    "plan_actions",
    "remaining_path",
]
