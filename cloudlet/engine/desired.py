"""The one writer of a cloudlet's desired state.

``apply``, ``rollback`` and ``sync`` all store a spec through here: under the
cloudlet's lock (so no reconcile is mid-way through the old spec), with its
load balancers' public ports allocated against the ones already handed out
(clients were told those), then the document itself. A reconcile never
writes the desired state; it only reads it.
"""

from __future__ import annotations

import attrs

from cloudlet.errors import CloudletError
from cloudlet.model.codec import unstructure
from cloudlet.model.expand import expand
from cloudlet.model.spec import Cloudlet
from cloudlet.store.records import StateRepo, cloudlet_lock


@attrs.frozen
class Expected:
    """The desired revision a writer saw before it decided (None: none was
    stored): a saved plan's, so that it never lands on a spec stored since."""

    revision: int | None


class DesiredMoved(CloudletError):
    """The stored desired revision is not the one expected."""

    def __init__(self, name: str, expected: int | None, now: int | None) -> None:
        was = "none" if expected is None else str(expected)
        is_now = "none" if now is None else str(now)
        super().__init__(f"the desired revision of {name} moved (was {was}, now {is_now})")
        self.expected, self.now = expected, now


def store_desired(
    repo: StateRepo,
    cloudlet: Cloudlet,
    *,
    lock_timeout: float,
    at: float,
    expected: Expected | None = None,
) -> int:
    """Store ``cloudlet`` as the desired state; returns its revision (the
    current one, unchanged, if the document is the same). With ``expected``,
    only if the stored revision is still that one (DesiredMoved otherwise)."""
    name = cloudlet.name
    with cloudlet_lock(repo.store, name, lock_timeout):
        if expected is not None:
            current = repo.get_desired(name)
            now = current.revision if current is not None else None
            if now != expected.revision:
                raise DesiredMoved(name, expected.revision, now)
        ports = expand(cloudlet, repo.get_ports(name)).port_mappings
        revision = repo.put_desired(name, unstructure(cloudlet), at=at)
        repo.put_ports(name, ports)
    return revision
