"""The LB documents on the real OpenStack test cloud, read as an LB VM's agent reads them.

The test cloud runs no metadata service, so each test reads a member
server's metadata through the Nova API (what the metadata service puts in
``meta``) and lays out ``openstack/latest/meta_data.json`` as Zed's
``nova/api/metadata/base.py`` (``_metadata_as_json``) renders it: ``uuid``,
``meta`` (only when the server has metadata), ``hostname``, ``name``,
``launch_index``, ``availability_zone``, ``random_seed``, ``project_id``,
``devices``, ``dedicated_cpus``. It is served over HTTP on 127.0.0.1 (the
metadata service) and written as a file (a config drive); the agent's
reader must give the same document from both, and that document must hold
the listeners with the targets' Neutron port addresses.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import cli, cli_json, ok
from osconsole import PLATFORM, Console, cloud_config
from test_openstack_e2e import TIMEOUT, address, scrubbed, write_spec

from cloudlet.agent.openstack_source import OpenstackSource
from cloudlet.lb import LbConfig
from cloudlet.lb.document import decode
from cloudlet.lb.members import documents
from cloudlet.providers.openstack.provider import OpenstackProvider

PATH = "/openstack/latest/meta_data.json"


@pytest.fixture(scope="module", autouse=True)
def cloud() -> None:
    cloud_config()


@pytest.fixture(scope="module")
def console(cloud: None) -> Iterator[Console]:
    c = Console()
    yield c
    c.close()


@pytest.fixture
def owner(console: Console) -> Iterator[str]:
    with scrubbed(console, "lbdoc") as name:
        yield name


def meta_data_json(console: Console, server: Any) -> str:
    """The server's meta_data.json, from what the API says of it now."""
    meta = console.conn.compute.fetch_server_metadata(server).metadata or {}
    body: dict[str, Any] = {"uuid": server.id}
    if meta:
        body["meta"] = meta
    body |= {
        "hostname": server.hostname or server.name,
        "name": server.name,
        "launch_index": server.launch_index or 0,
        "availability_zone": server.availability_zone,
        "random_seed": base64.b64encode(os.urandom(512)).decode(),
        "project_id": server.project_id,
        "devices": [],
        "dedicated_cpus": [],
    }
    return json.dumps(body)


class MetadataService:
    """meta_data.json of one server at a time, served on 127.0.0.1 under Nova's path."""

    def __init__(self) -> None:
        self.body = b"{}"
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = self.path == PATH
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(service.body if found else b"")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}{PATH}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def service() -> Iterator[MetadataService]:
    s = MetadataService()
    yield s
    s.close()


def read_member(
    console: Console, owner: str, rid: str, service: MetadataService, drive: Path
) -> str | None:
    """The document of member ``rid`` through the service and through a config drive,
    which must agree."""
    server = console.server(owner, rid)
    assert server is not None, rid
    text = meta_data_json(console, server)
    service.body = text.encode()
    (drive / "openstack" / "latest").mkdir(parents=True, exist_ok=True)
    (drive / PATH.lstrip("/")).write_text(text)
    from_service = OpenstackSource(service.url).read()
    assert OpenstackSource(str(drive)).read() == from_service
    return from_service


def listeners(cfg: LbConfig) -> list[tuple[str, int, str, list[tuple[str, str, int]]]]:
    return [
        (li.protocol, li.port, li.bind, [(b.id, b.address, b.port) for b in li.backends])
        for li in cfg.listeners
    ]


def test_each_member_reads_listeners_resolved_to_neutron_addresses_and_follows_changes(
    owner: str, console: Console, service: MetadataService, tmp_path: Path, state_dir: Path
) -> None:
    spec = write_spec(tmp_path / "spec.yaml", owner, "floating-ip", redundancy="vip")
    run: dict[str, Any] = {"state_dir": state_dir, "timeout": TIMEOUT}
    assert cli_json("sync", spec, "--yes", "--json", **run)["outcome"] == "converged"

    app, vip = address(console.port(owner, "port/app")), address(console.port(owner, "vip/edge"))
    legs = {m: address(console.port(owner, f"port/{m}.fip")) for m in ("edge.0", "edge.1")}
    for member, other in (("edge.0", "edge.1"), ("edge.1", "edge.0")):
        text = read_member(console, owner, f"vm/{member}", service, tmp_path / member)
        assert text is not None, member
        cfg = decode(text, "/run/lb")
        assert cfg.name == "lb/edge"
        assert listeners(cfg) == [("tcp", 443, vip, [("vm/app", app, 443)])]
        assert cfg.vrrp is not None
        assert cfg.vrrp.vip.partition("/")[0] == vip
        assert (cfg.vrrp.source, cfg.vrrp.peers) == (legs[member], (legs[other],))
    # The LB's records stay on its first VM; the agent's document is on each.
    edge1 = console.conn.compute.fetch_server_metadata(console.server(owner, "vm/edge.1"))
    assert not any(k.startswith("cloudlet.rec:") for k in edge1.metadata)

    # A listener more: the next sync rewrites both documents.
    write_spec(spec, owner, "floating-ip", redundancy="vip", vms=("app", "api"))
    text = spec.read_text()
    head, _, tail = text.rpartition("port: 443")  # api's: a dedicated LB cannot remap
    spec.write_text(f"{head}port: 8443{tail}")
    assert cli_json("sync", spec, "--yes", "--json", **run)["outcome"] == "converged"
    api = address(console.port(owner, "port/api"))
    for member in ("edge.0", "edge.1"):
        text = read_member(console, owner, f"vm/{member}", service, tmp_path / member)
        got = {li.name: li for li in decode(str(text), "/run/lb").listeners}
        assert sorted(got) == ["lb-listener/edge.api.tcp.8443", "lb-listener/edge.app.tcp.443"]
        new = got["lb-listener/edge.api.tcp.8443"]
        assert (new.port, new.bind) == (8443, vip)
        assert [(b.id, b.address, b.port) for b in new.backends] == [("vm/api", api, 8443)]

    # The LB's records deleted (as a destroy does first): both documents go.
    provider = OpenstackProvider(PLATFORM)
    try:
        seen = provider.observe(owner)
        for kind in ("lb-listener", "lb"):
            for obj in (o for o in seen if o.kind == kind):
                provider.delete(owner, obj)
    finally:
        provider.close()
    for member in ("edge.0", "edge.1"):
        assert read_member(console, owner, f"vm/{member}", service, tmp_path / member) is None
        server = console.server(owner, f"vm/{member}")
        meta = console.conn.compute.fetch_server_metadata(server).metadata
        assert not [k for k in meta if k.startswith("cloudlet.lb")], meta

    ok(cli("destroy", owner, "--yes", **run))
    assert console.tagged(owner)["server"] == []


def fresh_documents(owner: str) -> dict[str, str]:
    """What a sync would write now: the documents built from the provider's observe."""
    provider = OpenstackProvider(PLATFORM)
    try:
        return documents("lb/edge", provider.observe(owner))
    finally:
        provider.close()


def backends(text: str | None) -> list[tuple[str, str]]:
    cfg = decode(str(text), "/run/lb")
    return [(b.id, b.address) for li in cfg.listeners for b in li.backends]


def test_a_member_or_target_remade_alone_gets_its_documents_back(
    owner: str, console: Console, service: MetadataService, tmp_path: Path, state_dir: Path
) -> None:
    """The records live on vm/edge.0: a second member or a target deleted behind
    our back comes back alone (the LB is not touched), and its document (or the
    address in every document) must come back with it."""
    spec = write_spec(tmp_path / "spec.yaml", owner, "floating-ip", redundancy="vip")
    run: dict[str, Any] = {"state_dir": state_dir, "timeout": TIMEOUT}
    assert cli_json("sync", spec, "--yes", "--json", **run)["outcome"] == "converged"
    members = ("vm/edge.0", "vm/edge.1")

    def read_all() -> dict[str, str | None]:
        return {m: read_member(console, owner, m, service, tmp_path / m) for m in members}

    before = read_all()
    assert before == fresh_documents(owner)

    # Member 1 deleted out of band (the console waits until Nova has destroyed it).
    gone = console.server(owner, "vm/edge.1")
    console.remove(owner, gone.id)
    assert console.server(owner, "vm/edge.1") is None
    assert cli_json("sync", spec, "--yes", "--json", **run)["outcome"] == "converged"
    remade = console.server(owner, "vm/edge.1")
    assert remade is not None and remade.id != gone.id
    after = read_all()
    assert after["vm/edge.1"] is not None, "the re-made member has no document"
    assert after == fresh_documents(owner) == before  # its port (and address) survived

    # The target and its port deleted out of band, its old address held by
    # another port: the target comes back on a new address, which both
    # documents must name.
    old_port = console.port(owner, "port/app")
    old = address(old_port)
    console.remove(owner, console.server(owner, "vm/app").id)
    console.remove(owner, old_port.id)
    net = console.conn.network
    hold = net.create_port(
        network_id=old_port.network_id,
        name=f"{owner}:hold",
        fixed_ips=[{"subnet_id": old_port.fixed_ips[0]["subnet_id"], "ip_address": old}],
    )
    try:
        assert cli_json("sync", spec, "--yes", "--json", **run)["outcome"] == "converged"
        new = address(console.port(owner, "port/app"))
        assert new != old
        docs = read_all()
        for member in members:
            assert backends(docs[member]) == [("vm/app", new)], member
        assert docs == fresh_documents(owner)
    finally:
        net.delete_port(hold)

    ok(cli("destroy", owner, "--yes", **run))
    assert console.tagged(owner)["server"] == []
