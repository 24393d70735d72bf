"""The ``local`` platform for real: network namespaces, bridges, haproxy and
nginx on this host, and traffic from the host to the public addresses that
``status`` reports (inside the 198.18.0.0/15 range the platform routes to its
own namespaces, nothing else). Needs root; every test leaves the host as it
found it, also when it fails (the fixture destroys, then removes whatever of
this test's namespaces and links is left)."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import cli, describe, ok

from cloudlet.providers.local.provider import AUTO_RANGE, RUNTIME, Site

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


def spec(name: str, data_path: str = "no-router", cidr: str = "10.61.0.0/24") -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: cloudlet/v1
        kind: Cloudlet
        metadata: {{name: {name}}}
        spec:
          platform: {{type: local}}
          dataPath: {data_path}
          networks: [{{name: internal, cidr: {cidr}}}]
          loadBalancers:
            - {{name: root, type: shared, network: internal}}
          vms:
            - name: game
              network: internal
              expose:
                loadBalancer: root
                ports: [{{protocol: tcp, port: 443}}, {{protocol: udp, port: 5000}}]
            - name: chat
              network: internal
              expose: {{loadBalancer: root, ports: [{{protocol: tcp, port: 443}}]}}
        """
    )


def host_state(state: Path) -> dict[str, object]:
    """What a cloudlet must leave as it found it: namespaces, host links and
    routes, the host's nftables ruleset, and the processes the platform
    started for ``state`` (their command lines name files under it)."""

    def ip_json(*args: str) -> list[dict[str, object]]:
        out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True).stdout
        return list(json.loads(out or "[]"))

    procs = sorted(p.name for p in Path("/proc").iterdir() if p.name.isdigit() and _ours(p, state))
    nft = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    return {
        "netns": sorted(str(n["name"]) for n in ip_json("netns", "list")),
        "links": sorted(str(n["ifname"]) for n in ip_json("link", "show")),
        "routes": sorted(str(r.get("dst")) for r in ip_json("-4", "route", "show")),
        "nft": nft,
        "procs": procs,
    }


def _ours(proc: Path, state: Path) -> bool:
    try:
        cmdline = (proc / "cmdline").read_bytes()
    except OSError:
        return False
    return str(state).encode() in cmdline or any(
        f"{RUNTIME}/{Site(state / 'local', name).key}/".encode() in cmdline
        for name in (os.listdir(state / "local") if (state / "local").is_dir() else ())
    )


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "state"
    state.mkdir()
    names: list[str] = []
    yield_value = state
    before = host_state(state)
    try:
        yield yield_value
    finally:
        for name in os.listdir(state / "local") if (state / "local").is_dir() else []:
            names.append(name)
            cli("destroy", name, "--yes", state_dir=state, timeout=120)
        _scrub(state, names)
        after = host_state(state)
        assert after == before, "the host is not as it was"


def _scrub(state: Path, names: list[str]) -> None:
    """Remove what a failed test may have left: this state dir's namespaces
    and host leg only (their names derive from it)."""
    for name in names:
        s = Site(state / "local", name)
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        for ns in (line.split()[0] for line in listed.splitlines() if line):
            if ns == s.fabric or ns.startswith(s.fabric + "-"):
                pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
                for pid in pids.stdout.split():
                    subprocess.run(["kill", "-9", pid], check=False)
                subprocess.run(["ip", "netns", "del", ns], check=False)
        subprocess.run(["ip", "link", "del", s.host_if], capture_output=True, check=False)


def status(state: Path, name: str) -> dict[str, object]:
    return dict(json.loads(ok(cli("status", name, "--json", state_dir=state)).stdout))


def _ours_to_reach(ip: str) -> str:
    assert ipaddress.ip_address(ip) in AUTO_RANGE, f"{ip} is not in the platform's range"
    return ip


def http_first_line(ip: str, port: int) -> str:
    url = f"http://{_ours_to_reach(ip)}:{port}/"
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        return resp.read().decode().splitlines()[0]


def udp_answer(ip: str, port: int) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(b"hello", (_ours_to_reach(ip), port))
        return s.recv(512).decode().splitlines()[0]


def answers(mapping: dict[str, object]) -> str:
    ip, port = str(mapping["publicIp"]), int(str(mapping["publicPort"]))
    if mapping["protocol"] == "udp":
        return udp_answer(ip, port)
    return http_first_line(ip, port)


def sync(state: Path, path: Path) -> None:
    ok(cli("sync", path, "--yes", state_dir=state, timeout=120))


def test_every_port_mapping_answers_with_its_target(site: Path, tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(spec("edge-a"))
    sync(site, path)
    mappings = status(site, "edge-a")["portMappings"]
    assert isinstance(mappings, list) and len(mappings) == 3
    remapped = [m for m in mappings if m["publicPort"] != m["port"]]
    assert [m["target"] for m in remapped] == ["chat"], mappings  # the second claimant of 443
    for mapping in mappings:
        assert answers(mapping) == f"vm/{mapping['target']}", mapping
    ok(cli("plan", path, state_dir=site), 0)


def test_a_deleted_lb_vm_namespace_is_drift_and_healed(site: Path, tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(spec("edge-b"))
    sync(site, path)
    s = Site(site / "local", "edge-b")
    lb_vm = next(r for r in s.records.all() if r.id == "vm/root.0")
    subprocess.run(["ip", "netns", "pids", s.ns(lb_vm.uid)], capture_output=True, check=True)
    pids = subprocess.run(["ip", "netns", "pids", s.ns(lb_vm.uid)], capture_output=True, text=True)
    for pid in pids.stdout.split():
        subprocess.run(["kill", pid], check=False)
    subprocess.run(["ip", "netns", "del", s.ns(lb_vm.uid)], check=True)
    drifted = status(site, "edge-b")
    assert "vm/root.0" in drifted["drift"] and "lb/root" in drifted["drift"], drifted["drift"]
    plan = ok(cli("plan", path, state_dir=site), 2).stdout
    assert "broken" in plan, plan
    sync(site, path)
    for mapping in status(site, "edge-b")["portMappings"]:  # type: ignore[union-attr]
        assert answers(mapping) == f"vm/{mapping['target']}", mapping


def test_two_cloudlets_at_once_and_destroy_leaves_the_host_as_it_was(
    site: Path, tmp_path: Path
) -> None:
    before = host_state(site)
    for name, cidr in (("edge-c", "10.62.0.0/24"), ("edge-d", "10.62.0.0/24")):
        path = tmp_path / f"{name}.yaml"
        path.write_text(spec(name, cidr=cidr))
        sync(site, path)
    c, d = status(site, "edge-c"), status(site, "edge-d")
    ips = (
        {str(m["publicIp"]) for m in c["portMappings"]},
        {  # type: ignore[union-attr]
            str(m["publicIp"])
            for m in d["portMappings"]  # type: ignore[union-attr]
        },
    )
    assert len(ips[0]) == 1 and len(ips[1]) == 1 and ips[0] != ips[1], ips
    for doc in (c, d):
        for mapping in doc["portMappings"]:  # type: ignore[union-attr]
            assert answers(mapping) == f"vm/{mapping['target']}", mapping
    assert host_state(site) != before
    for name in ("edge-c", "edge-d"):
        proc = ok(cli("destroy", name, "--yes", state_dir=site, timeout=120))
        assert "converged" in proc.stdout, describe(proc)
    assert host_state(site) == before


def test_a_data_path_not_built_yet_is_one_line_and_leaves_nothing(
    site: Path, tmp_path: Path
) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(spec("edge-e", data_path="router"))
    proc = ok(cli("sync", path, "--yes", state_dir=site, timeout=120), 1)
    assert "builds no router yet" in proc.stdout + proc.stderr, describe(proc)
    assert "Traceback" not in proc.stdout + proc.stderr
