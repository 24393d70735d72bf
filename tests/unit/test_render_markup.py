"""Human output never reads data as rich markup: a reason with brackets prints as is."""

from __future__ import annotations

import io

from rich.console import Console

from cloudlet.cmd.render import print_plan, print_status
from cloudlet.model.resources import Observed, Resource
from cloudlet.planner import plan_actions
from cloudlet.shepherd.status import Condition, Status
from cloudlet.store.records import SyncRecord


def test_a_rule_change_shows_both_lists() -> None:
    old = Resource("security-group/web", {"rules": ("ingress tcp 443 0.0.0.0/0",)})
    new = Resource(
        "security-group/web", {"rules": ("egress any - ::/0", "ingress tcp 443 0.0.0.0/0")}
    )

    seen = Observed("u1", old.id, old.kind, old.attrs, old.deps)
    plan = plan_actions("c", [new], [seen])
    out = io.StringIO()
    print_plan(Console(file=out, width=300, color_system=None), plan)
    text = out.getvalue()
    assert "[ingress tcp 443 0.0.0.0/0]" in text
    assert "[egress any - ::/0, ingress tcp 443 0.0.0.0/0]" in text


def test_status_messages_with_brackets_survive() -> None:
    status = Status(
        cloudlet="c",
        conditions=(Condition("Ready", "False", "[bold]x", "HTTP 409: [oops]", 0.0),),
        last_sync=SyncRecord(1, "failed", "see [red]logs", 0.0, 1.0),
        resources=(),
        drift=(),
        port_mappings=(),
        observed_at=0.0,
    )
    out = io.StringIO()
    print_status(Console(file=out, width=300, color_system=None), status)
    text = out.getvalue()
    assert "[bold]x" in text and "HTTP 409: [oops]" in text and "see [red]logs" in text
