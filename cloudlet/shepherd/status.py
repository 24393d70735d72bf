"""Shepherd's report: what a cloudlet looks like now, against what it should.

Built from one observation of the orchestrator and the desired expansion;
the same report is stored after every sync and recomputed by ``status``, so
an operator always sees drift as of the moment they ask.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cloudlet.model.expand import Expansion
from cloudlet.model.resources import Observed
from cloudlet.planner.diff import attr_changes, group_observed


def resource_states(expansion: Expansion, actual: Sequence[Observed]) -> list[dict[str, Any]]:
    """One entry per desired or owned object: ready, drifted, missing or orphan."""
    have = group_observed(actual)
    want = expansion.by_id()
    out: list[dict[str, Any]] = []
    for rid in sorted(set(want) | set(have)):
        objs = have.get(rid, [])
        kind = rid.partition("/")[0]
        entry: dict[str, Any] = {"id": rid, "kind": kind}
        if rid not in want:
            entry["state"] = "orphan"
        elif not objs:
            entry["state"] = "missing"
        elif len(objs) > 1:
            entry["state"] = "duplicated"
        else:
            changed = attr_changes(want[rid], objs[0])
            entry["state"] = "drifted" if changed else "ready"
            if changed:
                entry["differs"] = sorted(k for k, _, _ in changed)
        if objs:
            entry["uid"] = objs[0].uid
            address = objs[0].attrs.get("address")
            if address is not None:
                entry["address"] = address
        out.append(entry)
    return out


def public_address(expansion: Expansion, lb: str, actual: Sequence[Observed]) -> str | None:
    lb_res = expansion.by_id().get(f"lb/{lb}")
    if lb_res is None:
        return None
    carrier = lb_res.attrs.get("address")
    for obj in actual:
        if obj.id == carrier:
            value = obj.attrs.get("address")
            return str(value) if value is not None else None
    return None


def port_mappings(expansion: Expansion, actual: Sequence[Observed]) -> list[dict[str, Any]]:
    ips = {
        m.load_balancer: public_address(expansion, m.load_balancer, actual)
        for m in expansion.port_mappings
    }
    return [
        {
            "loadBalancer": m.load_balancer,
            "target": m.target,
            "protocol": m.protocol,
            "port": m.port,
            "publicPort": m.public_port,
            "publicIp": ips[m.load_balancer],
        }
        for m in expansion.port_mappings
    ]


def condition(kind: str, ok: bool, reason: str, message: str, at: float) -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": at,
    }


def _conditions(
    drift: Sequence[str], last_sync: Mapping[str, Any] | None, at: float
) -> list[dict[str, Any]]:
    """Ready: matches its spec now. Synced: the last sync converged.
    Degraded: it differs from its spec and the last sync could not fix it."""
    outcome = (last_sync or {}).get("outcome")
    synced = outcome == "converged"
    message = str((last_sync or {}).get("message", ""))
    ready_msg = f"{len(drift)} resources differ from the desired state" if drift else ""
    sync_reason = {"converged": "LastSyncSucceeded", "failed": "LastSyncFailed"}
    degraded = bool(drift) and outcome == "failed"
    return [
        condition("Ready", not drift, "Drifted" if drift else "Converged", ready_msg, at),
        condition("Synced", synced, sync_reason.get(str(outcome), "NeverSynced"), message, at),
        condition(
            "Degraded",
            degraded,
            "SyncFailed" if degraded else "AsExpected",
            message if degraded else "",
            at,
        ),
    ]


def build_status(
    expansion: Expansion,
    actual: Sequence[Observed],
    *,
    at: float,
    last_sync: Mapping[str, Any] | None,
) -> dict[str, Any]:
    resources = resource_states(expansion, actual)
    drift = [r["id"] for r in resources if r["state"] != "ready"]
    conditions = _conditions(drift, last_sync, at)
    return {
        "cloudlet": expansion.cloudlet,
        "resources": resources,
        "drift": drift,
        "conditions": conditions,
        "lastSync": dict(last_sync) if last_sync else None,
        "portMappings": port_mappings(expansion, actual),
        "observedAt": at,
    }
