"""The ``openstack`` platform's provider: the Provider seam over openstacksdk.

It routes each kind to its mapping (Neutron objects, servers, records kept
as server metadata), reads through one snapshot per call, and turns every
SDK failure into a ``ProviderError``. The connection is made on first use,
so a provider can be built (and a plan validated) before the cloud answers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from cloudlet.model.kinds import KINDS, immutable_refusal
from cloudlet.model.resources import Observed, Resource
from cloudlet.model.spec import Platform
from cloudlet.providers.openstack.catalog import Catalog
from cloudlet.providers.openstack.config import OpenstackConfig, connect, load_config
from cloudlet.providers.openstack.faults import permanent, translated
from cloudlet.providers.openstack.neutron import Neutron
from cloudlet.providers.openstack.records import KINDS as RECORD_KINDS
from cloudlet.providers.openstack.records import Records
from cloudlet.providers.openstack.servers import Servers
from cloudlet.providers.openstack.snapshot import Snapshot

T = TypeVar("T")


class OpenstackProvider:
    def __init__(self, platform: Platform, config: OpenstackConfig | None = None) -> None:
        self.config = config or load_config(platform)
        self._lock = threading.Lock()
        self._conn: Any = None
        self._external: str | None = None

    # -- plumbing -------------------------------------------------------------

    def _connection(self) -> Any:
        with self._lock:
            if self._conn is None:
                conn = connect(self.config)
                self._catalog = Catalog(conn)
                self._neutron = Neutron(conn)
                self._servers = Servers(conn, self._catalog, self.config.build_timeout)
                self._records = Records(conn, self.snapshot)
                self._conn = conn
            return self._conn

    def _external_id(self) -> str:
        if self._external is None:
            net = self._connection().network
            wanted = self.config.external_network
            found = [n for n in net.networks(is_router_external=True) if wanted in (None, n.name)]
            if len(found) != 1:
                names = sorted(n.name for n in net.networks(is_router_external=True))
                which = f"named {wanted!r}" if wanted else "(platform.externalNetwork not set)"
                raise permanent(
                    f"no single external network {which}; the cloud has: {names or 'none'}"
                )
            self._external = str(found[0].id)
        return self._external

    def snapshot(self, owner: str) -> Snapshot:
        conn = self._connection()
        return Snapshot(conn, owner, self._external_id(), self._catalog)

    def _call(self, what: str, work: Callable[[], T]) -> T:
        with translated(what):
            return work()

    # -- the seam -------------------------------------------------------------

    def observe(self, owner: str) -> list[Observed]:
        return self._call(f"observe {owner}", lambda: self.snapshot(owner).observed())

    @staticmethod
    def _written(resource: Resource, obj: Any) -> Observed:
        """What was just made to match ``resource``, with what the cloud computed."""
        attrs = dict(resource.attrs)
        if resource.kind in ("port", "vip"):
            ips = obj.fixed_ips or []
            attrs["address"] = str(ips[0]["ip_address"]) if ips else ""
        elif resource.kind == "floating-ip":
            attrs["address"] = str(obj.floating_ip_address or "")
        elif resource.kind == "vm":
            attrs["status"] = str(obj.status)
        return Observed(str(obj.id), resource.id, resource.kind, attrs, resource.deps)

    def create(self, owner: str, resource: Resource) -> Observed:
        def work() -> Observed:
            if resource.kind not in KINDS:
                raise permanent(f"{resource.id}: unknown kind {resource.kind!r}")
            snap = self.snapshot(owner)
            if resource.kind in RECORD_KINDS:
                return self._records.put(resource, snap)
            if resource.kind == "vm":
                made = self._written(resource, self._servers.create(owner, resource, snap))
                self._records.vm_changed(owner, resource.id, snap)
                return made
            return self._written(resource, self._neutron.create(owner, resource, snap))

        return self._call(f"create {resource.id}", work)

    def update(self, owner: str, resource: Resource, current: Observed) -> Observed:
        def work() -> Observed:
            refusal = immutable_refusal(resource, current.attrs)
            if refusal is not None:
                raise permanent(refusal)
            snap = self.snapshot(owner)
            if resource.kind in RECORD_KINDS:
                return self._records.update(resource, current, snap)
            if resource.kind == "vm":
                made = self._written(resource, self._servers.update(resource, current.uid))
                self._records.vm_changed(owner, resource.id, snap)
                return made
            return self._written(resource, self._neutron.update(resource, current, snap))

        return self._call(f"update {resource.id}", work)

    def delete(self, owner: str, current: Observed) -> None:
        def work() -> None:
            if current.kind in RECORD_KINDS:
                self._records.delete(current, self.snapshot(owner))
            elif current.kind == "vm":
                self._servers.delete(current.uid, current.id or current.uid)
            else:
                snap = self.snapshot(owner) if current.kind == "router" else None
                self._neutron.delete(current, snap)  # type: ignore[arg-type]

        self._call(f"delete {current.id or current.uid}", work)

    def replacement_reason(self, resource: Resource, current: Observed) -> str | None:
        old, new = current.attrs.get("flavor"), resource.attrs.get("flavor")
        if resource.kind != "vm" or old == new or old is None or new is None:
            return None
        self._connection()
        return self._call(
            f"flavors of {resource.id}", lambda: self._catalog.disk_shrink(str(old), str(new))
        )

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
