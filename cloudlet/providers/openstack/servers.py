"""Servers: built on the ports the provider made, waited on without spinning.

A server is created with its owner tag and its metadata in the one call, so
no half-marked server can exist; a create that finds the server already
there waits for its build instead of making another. A build that ends in
ERROR is deleted and reported transient, so the engine's retry builds it
again. A flavor change is a resize, confirmed; an unfinished resize found
later (a crash between the two) is confirmed then.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from cloudlet.model.kinds import refs
from cloudlet.model.resources import Resource
from cloudlet.providers.openstack import marks
from cloudlet.providers.openstack.catalog import Catalog
from cloudlet.providers.openstack.faults import is_gone, permanent, transient
from cloudlet.providers.openstack.snapshot import Snapshot

#: First and largest pause between two polls of a server's state, in seconds.
POLL_FIRST, POLL_MAX = 0.25, 2.0


def wait_for(
    read: Callable[[], Any],
    done: Callable[[Any], bool],
    what: str,
    timeout: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Any:
    """Poll ``read`` with a doubling pause until ``done``; transient on timeout."""
    deadline = clock() + timeout
    pause = POLL_FIRST
    while True:
        value = read()
        if done(value):
            return value
        if clock() + pause > deadline:
            raise transient(f"{what}: still not done after {timeout:.0f} s")
        sleep(pause)
        pause = min(pause * 2, POLL_MAX)


class Servers:
    def __init__(self, conn: Any, catalog: Catalog, timeout: float) -> None:
        self._compute = conn.compute
        self._catalog = catalog
        self._timeout = timeout

    def _get(self, uid: str) -> Any:
        try:
            return self._compute.get_server(uid)
        except Exception as err:
            if is_gone(err):
                return None
            raise

    def _settled(self, uid: str, rid: str, wanted: tuple[str, ...]) -> Any:
        def done(server: Any) -> bool:
            return server is None or server.status in (*wanted, "ERROR")

        server = wait_for(lambda: self._get(uid), done, f"{rid}: build", self._timeout)
        if server is None:
            raise transient(f"{rid}: server {uid} vanished while being built")
        return server

    def create(self, owner: str, resource: Resource, snap: Snapshot) -> Any:
        ports = refs(resource, "ports")
        found = snap.server(resource.id)
        if found is None:
            image = self._catalog.image_id(str(resource.attrs["image"]))
            flavor = self._catalog.flavor_id(str(resource.attrs["flavor"]))
            found = self._compute.create_server(
                name=f"{owner}.{resource.name}",
                image_id=image,
                flavor_id=flavor,
                networks=[{"port": snap.uid(p)} for p in ports],
                metadata=marks.server_metadata(owner, resource.id, ports, resource.deps),
                tags=[marks.owner_tag(owner)],
            )
        server = self._settled(found.id, resource.id, ("ACTIVE", "VERIFY_RESIZE"))
        if server.status == "ERROR":
            fault = (getattr(server, "fault", None) or {}).get("message", "no fault given")
            self.delete(server.id, resource.id)
            raise transient(f"{resource.id}: build failed ({fault}); deleted, to build again")
        if server.status == "VERIFY_RESIZE":
            self._confirm(server, resource.id)
        return server

    def update(self, resource: Resource, uid: str) -> Any:
        server = self._get(uid)
        if server is None:
            raise permanent(f"{resource.id}: not found (uuid {uid})")
        if server.status == "VERIFY_RESIZE":
            server = self._confirm(server, resource.id)
        flavor = str(resource.attrs["flavor"])
        if getattr(server.flavor, "original_name", None) != flavor:
            self._compute.resize_server(server, self._catalog.flavor_id(flavor))
            server = self._settled(uid, resource.id, ("VERIFY_RESIZE", "ACTIVE"))
            if server.status == "VERIFY_RESIZE":
                server = self._confirm(server, resource.id)
            # Nova marks the resize in the request itself (status RESIZE), so
            # ACTIVE on the old flavor here means the scheduler refused it.
            if server.status != "ACTIVE" or server.flavor.original_name != flavor:
                raise transient(
                    f"{resource.id}: resize to {flavor} failed (status {server.status}; "
                    "see the server's actions)"
                )
        return server

    def _confirm(self, server: Any, rid: str) -> Any:
        self._compute.confirm_server_resize(server)
        return self._settled(server.id, rid, ("ACTIVE",))

    def delete(self, uid: str, rid: str) -> None:
        try:
            self._compute.delete_server(uid, ignore_missing=True)
        except Exception as err:
            if not is_gone(err):
                raise
        wait_for(lambda: self._get(uid), lambda s: s is None, f"{rid}: delete", self._timeout)
