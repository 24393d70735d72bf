"""Small builders shared by unit tests (pure data, no I/O)."""

from __future__ import annotations

from collections.abc import Iterable

from cloudlet.model.resources import Observed, Resource
from cloudlet.model.spec import (
    Cloudlet,
    CloudletSpec,
    Cluster,
    Expose,
    LoadBalancer,
    Metadata,
    Network,
    PortSpec,
    Rule,
    SecurityGroup,
    Vm,
)


def cloudlet(data_path: str = "no-router", **spec: object) -> Cloudlet:
    base: dict[str, object] = {
        "data_path": data_path,
        "networks": [Network("internal", "10.10.0.0/24")],
        "security_groups": [SecurityGroup("web", [Rule(ports="443")])],
        "load_balancers": [LoadBalancer("root", "internal", security_groups=["web"])],
        "clusters": [
            Cluster("apps", "internal", 1, 2, vip=True, expose=Expose("root", [PortSpec(443)]))
        ],
        "vms": [Vm("game", "internal", image="game-v1", expose=Expose("root", [PortSpec(443)]))],
    }
    base.update(spec)
    return Cloudlet("cloudlet/v1", "Cloudlet", Metadata("berlin-1"), CloudletSpec(**base))  # type: ignore[arg-type]


def as_observed(
    resources: Iterable[Resource], overrides: dict[str, dict[str, object]] | None = None
) -> list[Observed]:
    """What a perfect cloud would report after creating ``resources``."""
    out = []
    for r in resources:
        attrs = {**r.attrs, **(overrides or {}).get(r.id, {})}
        out.append(Observed(f"uid-{r.id}", r.id, r.kind, attrs, r.deps))
    return out
