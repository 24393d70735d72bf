"""The one writer of a cloudlet's desired state.

``apply``, ``rollback`` and ``sync`` all store a spec through here: under the
cloudlet's lock (so no reconcile is mid-way through the old spec), with its
load balancers' public ports allocated against the ones already handed out
(clients were told those), then the document itself. A reconcile never
writes the desired state; it only reads it.
"""

from __future__ import annotations

from cloudlet.model.codec import unstructure
from cloudlet.model.expand import expand
from cloudlet.model.spec import Cloudlet
from cloudlet.store.records import StateRepo, lock_name


def store_desired(repo: StateRepo, cloudlet: Cloudlet, *, lock_timeout: float, at: float) -> int:
    """Store ``cloudlet`` as the desired state; returns its revision (the
    current one, unchanged, if the document is the same)."""
    name = cloudlet.name
    with repo.store.lock(lock_name(name), lock_timeout):
        ports = expand(cloudlet, repo.get_ports(name)).port_mappings
        revision = repo.put_desired(name, unstructure(cloudlet), at=at)
        repo.put_ports(name, ports)
    return revision
