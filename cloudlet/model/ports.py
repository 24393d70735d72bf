"""Public port allocation on load balancers.

A shared LB has one public address for many back-ends, so two apps asking
for the same port collide. The first declared claimant keeps its port; a
later one is moved to the lowest free port from ``REMAP_START``. Previous
allocations are an input and are kept while their claim exists, so adding or
removing one app never moves another app's public port (clients were told
it). A dedicated LB forwards ports unchanged; a collision there is a spec
error found by validation.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from cloudlet.model.spec import Cloudlet, Expose

REMAP_START = 10000
PORT_MAX = 65535


@attrs.frozen
class PortClaim:
    """One exposed port as the spec asks for it."""

    load_balancer: str
    target: str
    protocol: str
    port: int

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.load_balancer, self.target, self.protocol, self.port)


@attrs.frozen
class PortMapping:
    """Where clients reach one claim: the LB's public port for it."""

    load_balancer: str
    target: str
    protocol: str
    port: int
    public_port: int

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.load_balancer, self.target, self.protocol, self.port)


def port_claims(cloudlet: Cloudlet) -> list[PortClaim]:
    """Claims in declaration order: clusters first, then VMs, as in the spec."""
    claims: list[PortClaim] = []
    spec = cloudlet.spec
    exposers: list[tuple[str, Expose | None]] = [(c.name, c.expose) for c in spec.clusters]
    exposers += [(v.name, v.expose) for v in spec.vms]
    for target, expose in exposers:
        if expose is None:
            continue
        for p in expose.ports:
            claims.append(PortClaim(expose.load_balancer, target, p.protocol, p.port))
    return claims


def allocate_ports(
    cloudlet: Cloudlet, previous: Iterable[PortMapping] = ()
) -> tuple[PortMapping, ...]:
    """Public ports for every claim, stable against ``previous``."""
    shared = {lb.name for lb in cloudlet.spec.load_balancers if lb.type == "shared"}
    claims = port_claims(cloudlet)
    kept = {m.key: m.public_port for m in previous if m.load_balancer in shared}
    used: set[tuple[str, str, int]] = set()
    chosen: dict[tuple[str, str, str, int], int] = {}
    for claim in claims:
        public = kept.get(claim.key)
        slot = (claim.load_balancer, claim.protocol, public or 0)
        if public is not None and slot not in used:
            chosen[claim.key] = public
            used.add(slot)
    cursor: dict[tuple[str, str], int] = {}
    for claim in claims:
        if claim.key in chosen:
            continue
        if claim.load_balancer not in shared:
            chosen[claim.key] = claim.port
            continue
        public = claim.port
        if (claim.load_balancer, claim.protocol, public) in used:
            public = _lowest_free(claim, used, cursor)
        chosen[claim.key] = public
        used.add((claim.load_balancer, claim.protocol, public))
    return tuple(
        PortMapping(c.load_balancer, c.target, c.protocol, c.port, chosen[c.key]) for c in claims
    )


def _lowest_free(
    claim: PortClaim, used: set[tuple[str, str, int]], cursor: dict[tuple[str, str], int]
) -> int:
    lane = (claim.load_balancer, claim.protocol)
    candidate = cursor.get(lane, REMAP_START)
    while (claim.load_balancer, claim.protocol, candidate) in used:
        candidate += 1
    if candidate > PORT_MAX:
        raise ValueError(f"no free public port left on load balancer {claim.load_balancer}")
    cursor[lane] = candidate + 1
    return candidate
