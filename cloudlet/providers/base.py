"""The Provider seam: the only way the engine touches an orchestrator.

Every call is idempotent, because the engine retries and may crash at any
point: ``create`` of an id that already exists (tagged with the same owner
and id) adopts and returns it; ``delete`` of a missing object succeeds.
Providers raise ``ProviderError`` (transient or permanent) and never leak
their SDK's types.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from cloudlet.model.resources import Observed, Resource


class Provider(Protocol):
    def observe(self, owner: str) -> list[Observed]:
        """Every object tagged with ``owner``, in one pass."""
        ...

    def create(self, owner: str, resource: Resource) -> Observed:
        """Create (or adopt, if already tagged) the object for ``resource``."""
        ...

    def update(self, owner: str, resource: Resource, current: Observed) -> Observed:
        """Change the mutable attributes of ``current`` to match ``resource``."""
        ...

    def replacement_reason(self, resource: Resource, current: Observed) -> str | None:
        """Why this cloud cannot make ``current`` match ``resource`` in place,
        though the model calls every changed attribute mutable; None if it can.

        Like a Terraform provider's "requires replace": a cloud's own rule
        (Nova resizes only to a root disk at least as large) that the plan
        must show as a replacement, not discover as a failing update.
        """
        ...

    def delete(self, owner: str, current: Observed) -> None:
        """Delete ``current``; an object that is already gone is success."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class HostReachable(Protocol):
    """A platform whose public addresses this host reaches (``local``): Shepherd
    probes its port mappings after each sync and in ``status``."""

    public_addresses_reachable_from_host: bool


@runtime_checkable
class LbReports(Protocol):
    """A platform whose LB agents' reports Shepherd reads (``local``: the report
    file each agent writes beside its document), to export them as metrics.

    The reports come back as text, undecoded: their format is the agent's
    (``cloudlet.agent.report``), which providers do not import."""

    def lb_reports(self, owner: str) -> Sequence[tuple[str, str, str | None]]:
        """``(lb id, member VM id, report text)`` for every member VM of every
        LB of ``owner`` that exists; the text is None when there is no report
        to read (no agent yet, or it died before writing one)."""
        ...
