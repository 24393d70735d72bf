"""The operator's view of the test cloud: openstacksdk straight at it, behind the engine's back.

Tests use it to count what a cloudlet owns by tag, and to make drift the
way an operator would (delete a server, remove a rule, rewrite a port's
address pairs), never through the provider under test.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import cloudenv
import openstack

from cloudlet.model.spec import Platform

CLOUD = "osci-demo"
PLATFORM = Platform(type="openstack", cloud=CLOUD, external_network="public")
OWNER_TAG = "cloudlet.owner="
#: How long a test waits for the cloud to finish what it does asynchronously.
SETTLE_SECONDS = 120.0

T = TypeVar("T")


def eventually(
    read: Callable[[], T], done: Callable[[T], bool], timeout: float = SETTLE_SECONDS
) -> T:
    """Poll ``read`` until ``done`` or ``timeout``; the last value either way.

    For what the cloud finishes after its answer (Nova deletes a server
    after the API said yes): the caller asserts on the value it returns, so
    a cloud that never settles still fails the test, with what it saw.
    """
    deadline = time.monotonic() + timeout
    pause = 0.1
    while True:
        value = read()
        if done(value) or time.monotonic() + pause > deadline:
            return value
        time.sleep(pause)
        pause = min(pause * 2, 2.0)


def cloud_config() -> Path:
    """clouds.yaml of a running test cloud, started if need be; sets OS_CLIENT_CONFIG_FILE.

    ``CLOUDLET_OS_CLOUDS_YAML`` names the clouds.yaml of a cloud someone
    already runs (with the same cloud names), for a developer's quick loop.
    """
    given = os.environ.get("CLOUDLET_OS_CLOUDS_YAML")
    path = Path(given) if given else cloudenv.ensure_cloud_up()
    os.environ["OS_CLIENT_CONFIG_FILE"] = str(path)
    return path


class Console:
    def __init__(self, cloud: str = CLOUD) -> None:
        self.conn = openstack.connect(cloud=cloud)

    def close(self) -> None:
        self.conn.close()

    # -- reading ----------------------------------------------------------------

    def tagged(self, owner: str) -> dict[str, list[Any]]:
        tag = OWNER_TAG + owner
        net = self.conn.network
        return {
            "network": list(net.networks(tags=tag)),
            "subnet": list(net.subnets(tags=tag)),
            "router": list(net.routers(tags=tag)),
            "security-group": list(net.security_groups(tags=tag)),
            "port": list(net.ports(tags=tag)),
            "floating-ip": list(net.ips(tags=tag)),
            "server": list(self.conn.compute.servers(details=True, tags=tag)),
        }

    def counts(self, owner: str) -> Counter[str]:
        return Counter({k: len(v) for k, v in self.tagged(owner).items() if v})

    def named(self, owner: str) -> list[str]:
        """Objects named for the owner (tagged or not): what a crash could leave untagged."""
        prefix = f"{owner}:"
        net = self.conn.network
        found = [
            f"{kind} {o.name}"
            for kind, lister in (
                ("network", net.networks),
                ("subnet", net.subnets),
                ("router", net.routers),
                ("security-group", net.security_groups),
                ("port", net.ports),
            )
            for o in lister()
            if (o.name or "").startswith(prefix)
        ]
        found += [
            f"floating-ip {o.description}"
            for o in net.ips()
            if (o.description or "").startswith(prefix)
        ]
        found += [
            f"server {s.name}"
            for s in self.conn.compute.servers()
            if (s.name or "").startswith(f"{owner}.")
        ]
        return sorted(found)

    def port(self, owner: str, rid: str) -> Any:
        return self._by_id(owner, "port", rid)

    def server(self, owner: str, rid: str) -> Any:
        found = [
            s for s in self.tagged(owner)["server"] if (s.metadata or {}).get("cloudlet.id") == rid
        ]
        assert len(found) <= 1, f"{rid}: {len(found)} servers"
        return found[0] if found else None

    def _by_id(self, owner: str, kind: str, rid: str) -> Any:
        found = [o for o in self.tagged(owner)[kind] if f"cloudlet.id={rid}" in (o.tags or [])]
        assert len(found) <= 1, f"{rid}: {len(found)} objects"
        return found[0] if found else None

    def _server_gone(self, uid: str) -> bool:
        try:
            self.conn.compute.get_server(uid)
        except openstack.exceptions.NotFoundException:
            return True
        return False

    def group(self, owner: str, rid: str) -> Any:
        return self._by_id(owner, "security-group", rid)

    def ip(self, owner: str, rid: str) -> Any:
        return self._by_id(owner, "floating-ip", rid)

    # -- drift ------------------------------------------------------------------

    def remove(self, owner: str, uid: str) -> None:
        """Delete the object with cloud id ``uid`` (or a record ``<server>/<id>``)."""
        if "/" in uid:
            server_id, _, rid = uid.partition("/")
            server = self.conn.compute.get_server(server_id)
            prefix = "cloudlet.rec:" + rid.replace("/", ":", 1) + ":"
            keys = [k for k in server.metadata or {} if k.startswith(prefix)]
            self.conn.compute.delete_server_metadata(server, keys)
            return
        for kind, objects in self.tagged(owner).items():
            for obj in objects:
                if obj.id == uid:
                    self._delete(kind, obj)
                    return
        raise AssertionError(f"{uid} is not among {owner}'s objects")

    def _delete(self, kind: str, obj: Any) -> None:
        net = self.conn.network
        if kind == "server":
            self.conn.compute.delete_server(obj)
            # Not the SDK's wait_for_delete: it returns once the status says
            # DELETED, while Nova still lists the server until it is destroyed.
            eventually(lambda: self._server_gone(obj.id), bool)
        elif kind == "router":
            for port in net.ports(device_id=obj.id, device_owner="network:router_interface"):
                net.remove_interface_from_router(obj, port_id=port.id)
            net.delete_router(obj)
        else:
            delete = {
                "network": net.delete_network,
                "subnet": net.delete_subnet,
                "security-group": net.delete_security_group,
                "port": net.delete_port,
                "floating-ip": net.delete_ip,
            }[kind]
            delete(obj)

    def set_rules(self, group_id: str, texts: list[str]) -> None:
        net = self.conn.network
        group = net.get_security_group(group_id)
        for rule in group.security_group_rules or []:
            net.delete_security_group_rule(rule["id"])
        for text in texts:
            direction, protocol, ports, remote = text.split()
            low, _, high = ports.partition("-")
            net.create_security_group_rule(
                security_group_id=group_id,
                direction=direction,
                protocol=None if protocol == "any" else protocol,
                port_range_min=None if ports == "-" else int(low),
                port_range_max=None if ports == "-" else int(high or low),
                remote_ip_prefix=remote,
                ethertype="IPv6" if ":" in remote else "IPv4",
            )

    def set_attr(self, owner: str, uid: str, key: str, value: str) -> None:
        if key != "rules":
            raise NotImplementedError(f"out-of-band change of {key!r}")
        self.set_rules(uid, list(json.loads(value)))

    def delete_rule(self, group_id: str, text_prefix: str) -> None:
        from cloudlet.providers.openstack.rules import rule_text

        net = self.conn.network
        group = net.get_security_group(group_id)
        doomed = [r for r in group.security_group_rules if rule_text(r).startswith(text_prefix)]
        assert doomed, f"no rule {text_prefix!r} in {group_id}"
        for rule in doomed:
            net.delete_security_group_rule(rule["id"])

    def set_pairs(self, port_id: str, addresses: list[str]) -> None:
        self.conn.network.update_port(
            port_id, allowed_address_pairs=[{"ip_address": a} for a in addresses]
        )

    def purge(self, owner: str) -> None:
        """Delete everything tagged for ``owner``, dependents first (test cleanup)."""
        order = ("server", "floating-ip", "router", "port", "subnet", "security-group", "network")
        for kind in order:
            for obj in self.tagged(owner)[kind]:
                with contextlib.suppress(openstack.exceptions.NotFoundException):
                    self._delete(kind, obj)
