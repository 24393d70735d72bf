"""Shell and log access to a VM on ``local``, for the relay's site side
(``cloudlet/relay/site.py``): a VM is a namespace, so its shell is a
command run in that namespace (``ip netns exec``), and its log is what its
back-end (or, on an LB's VM, its ``lb-agent``) writes under its runtime
directory."""

from __future__ import annotations

from pathlib import Path

import attrs

from cloudlet.errors import NotFound
from cloudlet.providers.local import host
from cloudlet.providers.local.site import Site


@attrs.frozen
class VmAccess:
    namespace: str
    log: Path

    def argv(self, cmd: list[str]) -> list[str]:
        """``cmd`` (none: a shell) run inside the VM's namespace."""
        return ["ip", "netns", "exec", self.namespace, *(cmd or ["/bin/sh"])]


def vm_access(state_dir: Path, cloudlet: str, vm_id: str) -> VmAccess:
    """Where VM ``vm_id`` (``vm/NAME``) of ``cloudlet`` runs, as the local
    platform under ``state_dir`` built it; NotFound if it has no such VM
    or its namespace is gone."""
    site = Site(Path(state_dir) / "local", cloudlet)
    record = site.records.by_id(vm_id)
    if record is None or record.kind != "vm":
        raise NotFound(f"cloudlet {cloudlet} has no {vm_id} on this host")
    ns = site.ns(record.uid)
    if ns not in host.namespaces():
        raise NotFound(f"{cloudlet} {vm_id}: its namespace {ns} is gone (a sync re-makes it)")
    log = site.run_dir(record.uid) / "backend.log"
    if not log.exists():  # an LB's VM: its agent's log, in its LB's runtime directory
        agent = sorted(site.dir.glob(f"run/*/{record.uid}.agent.log"))
        log = agent[0] if agent else log
    return VmAccess(ns, log)
