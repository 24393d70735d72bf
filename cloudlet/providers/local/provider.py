"""The ``local`` platform: a whole cloudlet in network namespaces on this host.

A cloudlet's fabric (``site.py``) holds a Linux bridge per network and one
for the external network, which the host reaches through one veth and the
on-link route of the cloudlet's external range. A VM (``vms.py``) is a
namespace with a veth per port, running a back-end that answers on every
port; a load balancer's VMs (``lbs.py``) run ``cloudlet lb-agent``, which
runs haproxy, nginx stream and keepalived from the LB document the provider
writes from its listener records. Subnets, ports, VIPs, security groups and cluster
nodes are records with addresses from their CIDR; what they mean is built
into the namespaces of the VMs that use them: a port's security groups are
an nftables filter on its interface in its VM's namespace (``security.py``,
Neutron's semantics; a port with no group is not filtered).

Observe reads the records (``records.py``) and checks that what each one
describes still exists: an object whose namespace was deleted or whose
daemon died is reported with the cloud-computed ``broken`` attribute, which
the planner answers with a replacement; but a VM whose namespace is gone is
not observed at all, as a cloud's deleted server is not, so it is re-created
on its record and what is built on it stays (``_gone``).

Each kind's building lives in one module, registered in ``KINDS_BUILT``;
this version builds the three data paths: ``no-router``, and ``router``
and ``floating-ip`` through a router namespace (``routers.py``: its
external address comes from the external range, like a floating IP's). A
VIP is a record whose address keepalived moves among the VMs whose ports
list it (``vips.py``, called from ``vms.py`` and ``lbs.py``).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import attrs

from cloudlet.errors import ProviderError
from cloudlet.model.kinds import immutable_refusal
from cloudlet.model.resources import AttrValue, Observed, Resource
from cloudlet.providers.local import host, lbs, networks, reports, routers, security, vips, vms
from cloudlet.providers.local.records import Record
from cloudlet.providers.local.site import AUTO_RANGE, RUNTIME, Site

__all__ = ["AUTO_RANGE", "RUNTIME", "LocalProvider", "Site"]


@attrs.frozen
class Builder:
    """How one kind is built on the host, taken down, and checked."""

    build: Callable[[Site, Record], None] = lambda site, record: None
    unbuild: Callable[[Site, Record], None] = lambda site, record: None
    health: Callable[[Site, Record, set[str]], dict[str, AttrValue]] = (
        lambda site, record, present: {}
    )
    #: After a create, update or delete, outside the provider's lock: wait
    #: until what was built works (an LB's agents applied their documents),
    #: while other steps go on.
    settle: Callable[[Site, Record], None] = lambda site, record: None


#: Kinds not listed are records only (subnet, k8s-node); a VIP is served by its
#: holder VMs (``vips.py``) and stops with its record; a group's or a port's
#: change reloads the filter of the VMs it concerns (``security.py``); a port's
#: change also starts or stops the keepalived of the VIPs its VM serves (``vms.refresh_port``).
KINDS_BUILT: dict[str, Builder] = {
    "network": Builder(networks.build, networks.unbuild, networks.health),
    "vip": Builder(unbuild=vips.unbuild),
    "vm": Builder(vms.build, vms.unbuild, vms.health, lbs.settle_member),
    "lb": Builder(lbs.refresh, lbs.unbuild, lbs.health, lbs.settle),
    "lb-listener": Builder(lbs.build_listener, lbs.unbuild_listener, settle=lbs.settle_listener),
    "router": Builder(routers.build, routers.unbuild, routers.health),
    "floating-ip": Builder(routers.build_fip, routers.unbuild_fip, routers.fip_health),
    "security-group": Builder(security.refresh_group),
    "port": Builder(vms.refresh_port),
}
RECORD_ONLY = Builder()
#: Kinds refused (permanent): none left.
UNSUPPORTED: set[str] = set()


class LocalProvider:
    #: The public addresses route from this host to the cloudlet's own fabric.
    public_addresses_reachable_from_host = True

    def __init__(self, state_dir: Path | str, *, external_cidr: str | None = None) -> None:
        self.base = Path(state_dir) / "local"
        self.wanted_cidr = external_cidr
        self._lock = threading.RLock()

    def observe(self, owner: str) -> list[Observed]:
        site = Site(self.base, owner)
        with self._lock:
            present = host.namespaces()
            return [
                r.observed(_health(site, r, present))
                for r in site.records.all()
                if not _gone(site, r, present)
            ]

    def create(self, owner: str, resource: Resource) -> Observed:
        if resource.kind in UNSUPPORTED:
            raise ProviderError(
                f"{resource.id}: the local platform builds no {resource.kind} yet",
                transient=False,
            )
        site = Site(self.base, owner)
        with self._lock:
            site.ensure_fabric(self.wanted_cidr)
            try:
                record = site.records.by_id(resource.id) or _new_record(site, resource)
            except ProviderError:
                if not site.records.all():
                    site.teardown_fabric()  # nothing else here: leave the host as it was
                raise
            _builder(record).build(site, record)
            observed = _observed(site, record)
        _builder(record).settle(site, record)
        return observed

    def update(self, owner: str, resource: Resource, current: Observed) -> Observed:
        site = Site(self.base, owner)
        with self._lock:
            record = site.records.get(current.uid)
            if record is None:
                raise ProviderError(f"{resource.id}: no object {current.uid}", transient=False)
            refusal = immutable_refusal(resource, record.attrs)
            if refusal is not None:
                raise ProviderError(refusal, transient=False)
            record.attrs.update(resource.attrs)
            record.deps = list(resource.deps)
            site.records.put(record)
            _builder(record).build(site, record)
            observed = _observed(site, record)
        _builder(record).settle(site, record)
        return observed

    def replacement_reason(self, resource: Resource, current: Observed) -> str | None:
        return None

    def delete(self, owner: str, current: Observed) -> None:
        site = Site(self.base, owner)
        with self._lock:
            record = site.records.get(current.uid)
            if record is None:
                return
            _builder(record).unbuild(site, record)
            site.records.remove(record.uid)
            _forget_the_gone(site)
            if not site.records.all():
                site.teardown_fabric()
        _builder(record).settle(site, record)

    def lb_reports(self, owner: str) -> list[tuple[str, str, str | None]]:
        """The LB agents' reports, for Shepherd's metrics (``reports.py``); no lock:
        records are replaced atomically, and a scrape must not wait for a sync."""
        return reports.lb_reports(Site(self.base, owner))

    def close(self) -> None:
        return None


def _builder(record: Record) -> Builder:
    return KINDS_BUILT.get(record.kind, RECORD_ONLY)


def _new_record(site: Site, resource: Resource) -> Record:
    """The record first: a create cut off after this is adopted."""
    record = Record(
        uuid.uuid4().hex[:8], resource.id, resource.kind, dict(resource.attrs), list(resource.deps)
    )
    record.attrs.update(site.computed(record))
    site.records.put(record)
    return record


def _gone(site: Site, record: Record, present: set[str]) -> bool:
    """A VM whose namespace is not there does not exist, as a server deleted
    behind a cloud's back does not: the plan re-creates it (adopting its
    record: the same uid, ports and addresses) instead of replacing it, so
    what is built on it (an LB it is a member of, its listeners, a cluster
    node) is not rebuilt. Its record stays, with the pids of what it ran."""
    return record.kind == "vm" and site.ns(record.uid) not in present


def _forget_the_gone(site: Site) -> None:
    """Once only gone VMs' records are left (a destroy observes none of
    them), take down what they left and drop them, so the fabric goes."""
    records = site.records.all()
    if not records or any(r.kind != "vm" for r in records):
        return  # the cheap test first: most deletes leave more than VMs
    present = host.namespaces()
    if all(_gone(site, r, present) for r in records):
        for vm in records:
            vms.unbuild(site, vm)
            site.records.remove(vm.uid)


def _health(site: Site, record: Record, present: set[str]) -> dict[str, AttrValue]:
    """``broken`` (why) when what the record describes is not all there."""
    return _builder(record).health(site, record, present)


def _observed(site: Site, record: Record) -> Observed:
    return record.observed(_health(site, record, host.namespaces()))
