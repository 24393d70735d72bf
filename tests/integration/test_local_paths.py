"""The ``router`` and ``floating-ip`` data paths on ``local``, for real: a
router namespace between the external bridge and the subnets, its filter,
and the floating IP's NAT. Traffic goes from the host to the public
addresses ``status`` reports, and from a probe namespace this test puts on
the cloudlet's external bridge (an address of the external range, a route
to the subnets via the router) to private addresses, which must not answer.
Nothing is sent anywhere else: the host is only asked which route it would
take (``ip route get`` sends nothing). Needs root; the fixture leaves the
host as it found it."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import cli, ok
from localsite import (  # noqa: F401 - local_site is the fixture `site`
    answers,
    local_site,
    spec,
    status,
    sync,
)

from cloudlet.providers.local.provider import Site

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

LB_SUBNET = "10.66.9.0/24"

#: Run inside a namespace: the first line a TCP (HTTP) or UDP port answers, or
#: nothing within the timeout.
ASK = """
import socket, sys
ip, port, proto = sys.argv[1], int(sys.argv[2]), sys.argv[3]
kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
with socket.socket(socket.AF_INET, kind) as s:
    s.settimeout(1.5)
    try:
        if proto == "udp":
            s.sendto(b"hello", (ip, port))
        else:
            s.connect((ip, port))
            s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
        data = s.recv(512).decode()
    except OSError:
        sys.exit(1)
lines = [l for l in data.splitlines() if l]
print(lines[0] if proto == "udp" else data.split("\\r\\n\\r\\n", 1)[-1].splitlines()[0])
"""


def path_spec(name: str, data_path: str, cidr: str) -> str:
    text = spec(name, data_path=data_path, cidr=cidr)
    if data_path == "floating-ip":
        text = text.replace(
            "  dataPath: floating-ip\n", f"  dataPath: floating-ip\n  lbSubnet: {LB_SUBNET}\n"
        )
    return text


def ask(ns: str, ip: str, port: int, proto: str = "tcp") -> str | None:
    """What ``ip:port`` answers from inside ``ns`` (None: nothing)."""
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-S", "-c", ASK, ip, str(port), proto],
        capture_output=True,
        text=True,
        timeout=20,
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


#: Run inside the probe: answer each datagram with the source address it came from.
SEEN = """
import socket, sys
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    s.bind(("0.0.0.0", int(sys.argv[1])))
    s.settimeout(60)
    print("ready", flush=True)
    while True:
        data, peer = s.recvfrom(512)
        s.sendto(peer[0].encode() + b"\\n", peer)
"""


@contextlib.contextmanager
def source_echo(ns: str, port: int) -> Iterator[None]:
    """A UDP server in ``ns`` telling each sender the address it saw."""
    argv = ["ip", "netns", "exec", ns, sys.executable, "-S", "-c", SEEN, str(port)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield
    finally:
        proc.kill()
        proc.wait()


def probe_address(s: Site) -> str:
    """The probe's address: the external range's last (the pool starts at the bottom)."""
    cidr = s.external_cidr()
    assert cidr is not None
    return str(list(ipaddress.ip_network(cidr).hosts())[-1])


#: The probe's MAC, the same each time it is made: the router's neighbour
#: entry for the probe's address stays right from one probe to the next.
PROBE_MAC = "02:00:5e:00:00:fe"


@contextlib.contextmanager
def probe(s: Site, via: str, subnets: list[str]) -> Iterator[str]:
    """A namespace of this test's on the cloudlet's external bridge, with the
    external range's last address and a route to ``subnets`` via ``via``.
    Its name starts with the cloudlet's fabric, so the fixture's scrub takes it
    if this test dies before its own clean-up."""
    ns, cidr = f"{s.fabric}-probe", s.external_cidr()
    assert cidr is not None
    mine = f"{probe_address(s)}/{ipaddress.ip_network(cidr).prefixlen}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        run = ["ip", "-n", s.fabric, "link"]
        subprocess.run(
            [
                *run,
                "add",
                "probe0",
                "type",
                "veth",
                "peer",
                "eth0",
                "address",
                PROBE_MAC,
                "netns",
                ns,
            ],
            check=True,
        )
        subprocess.run([*run, "set", "probe0", "master", "ext", "up"], check=True)
        lines = ["link set lo up", f"addr add {mine} dev eth0", "link set eth0 up"]
        lines += [f"route add {subnet} via {via}" for subnet in subnets]
        subprocess.run(
            ["ip", "-n", ns, "-batch", "-"], input="\n".join(lines) + "\n", text=True, check=True
        )
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
        subprocess.run(
            ["ip", "-n", s.fabric, "link", "del", "probe0"], capture_output=True, check=False
        )


def host_route_dev(ip: str) -> str | None:
    """The device the host would send ``ip`` through (nothing is sent)."""
    proc = subprocess.run(["ip", "-j", "route", "get", ip], capture_output=True, text=True)
    routes = json.loads(proc.stdout or "[]")
    return str(routes[0].get("dev")) if routes else None


def record(s: Site, rid: str) -> dict[str, object]:
    found = s.records.by_id(rid)
    assert found is not None, rid
    return dict(found.attrs)


def assert_every_mapping_answers(
    state: Path, name: str, *, within: float = 0.0
) -> list[dict[str, object]]:
    """Every port mapping answers with its target's id; ``within`` seconds
    allowed for the LB's health checks to see back-ends come back (haproxy
    checks a DOWN server every 500 ms)."""
    mappings = status(state, name)["portMappings"]
    assert isinstance(mappings, list) and len(mappings) == 3, mappings
    assert {m["protocol"] for m in mappings} == {"tcp", "udp"}
    remapped = [m for m in mappings if m["publicPort"] != m["port"]]
    assert [m["target"] for m in remapped] == ["chat"], mappings  # the second claimant of 443
    for mapping in mappings:
        assert answer_within(mapping, within) == f"vm/{mapping['target']}", mapping
    return mappings


def answer_within(mapping: dict[str, object], seconds: float) -> str | None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return answers(mapping)
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def assert_closed_from_outside(
    s: Site, private: list[str], public: str, subnets: list[str]
) -> None:
    """The host has no route into the subnets through the platform; a probe on
    the external network, routed to them via the router, gets no answer from
    any private address, while the public address answers it."""
    for ip in private:
        assert host_route_dev(ip) != s.host_if, ip
    router = record(s, f"router/{s.owner}")
    with probe(s, str(router["address"]), subnets) as ns:
        assert ask(ns, public, 443) == "vm/game"  # the probe is on the external network
        for ip in private:
            assert ask(ns, ip, 443) is None, f"{ip}:443 answered from outside"
            assert ask(ns, ip, 5000, "udp") is None, f"{ip}:5000/udp answered from outside"


def assert_only_the_target_goes_out_as_its_floating_ip(s: Site, fip: str) -> None:
    """A floating IP is a 1:1 NAT: its target's own connections leave as the
    floating IP (SNAT); a back-end, with no floating IP, gets nothing out."""
    lb_vm, game = s.records.by_id("vm/root.0"), s.records.by_id("vm/game")
    assert lb_vm is not None and game is not None
    router = record(s, f"router/{s.owner}")
    subnets = [str(record(s, sid)["cidr"]) for sid in ("subnet/internal", f"subnet/{s.owner}.lb")]
    with probe(s, str(router["address"]), subnets) as ns, source_echo(ns, 9999):
        assert ask(s.ns(lb_vm.uid), probe_address(s), 9999, "udp") == fip
        assert ask(s.ns(game.uid), probe_address(s), 9999, "udp") is None


@pytest.mark.parametrize("data_path", ["router", "floating-ip"])
def test_every_port_mapping_answers_and_the_subnets_are_closed(
    site: Path, tmp_path: Path, data_path: str
) -> None:
    name = "rt-a" if data_path == "router" else "fip-a"
    path = tmp_path / f"{name}.yaml"
    path.write_text(path_spec(name, data_path, "10.66.0.0/24"))
    sync(site, path)
    mappings = assert_every_mapping_answers(site, name)
    s = Site(site / "local", name)
    game = str(record(s, "port/game")["address"])
    lb_leg = "port/root.0.ext" if data_path == "router" else "port/root.0.fip"
    lb_private = str(record(s, lb_leg)["address"])
    public = {str(m["publicIp"]) for m in mappings}
    if data_path == "router":
        assert public == {lb_private}, mappings  # the LB's own external leg
        # the LB reaches its back-ends through the router (the probe is refused)
        lb_vm = s.records.by_id("vm/root.0")
        assert lb_vm is not None and ask(s.ns(lb_vm.uid), game, 443) == "vm/game"
        assert_closed_from_outside(s, [game], lb_private, ["10.66.0.0/24"])
    else:
        fip = str(record(s, "floating-ip/root")["address"])
        assert public == {fip} and fip != lb_private, mappings
        assert ipaddress.ip_address(lb_private) in ipaddress.ip_network(LB_SUBNET)
        assert_closed_from_outside(s, [game, lb_private], fip, ["10.66.0.0/24", LB_SUBNET])
        assert_only_the_target_goes_out_as_its_floating_ip(s, fip)
    ok(cli("plan", path, state_dir=site), 0)


@pytest.mark.parametrize("data_path", ["router", "floating-ip"])
def test_a_flushed_or_deleted_router_is_drift_and_healed(
    site: Path, tmp_path: Path, data_path: str
) -> None:
    name = "rt-b" if data_path == "router" else "fip-b"
    path = tmp_path / f"{name}.yaml"
    path.write_text(path_spec(name, data_path, "10.67.0.0/24"))
    sync(site, path)
    s = Site(site / "local", name)
    expect = {f"router/{name}"} | ({"floating-ip/root"} if data_path == "floating-ip" else set())
    for breakage in (["nft", "flush", "ruleset"], None):
        router = s.records.by_id(f"router/{name}")
        assert router is not None
        if breakage is None:
            subprocess.run(["ip", "netns", "del", s.ns(router.uid)], check=True)
        else:
            subprocess.run(["ip", "netns", "exec", s.ns(router.uid), *breakage], check=True)
        drift = status(site, name)["drift"]
        assert isinstance(drift, list) and expect <= set(drift), drift
        assert "broken" in ok(cli("plan", path, state_dir=site), 2).stdout
        sync(site, path)
        assert status(site, name)["drift"] == []
        assert_every_mapping_answers(site, name, within=2.0)
    game = str(record(s, "port/game")["address"])
    public = str(assert_every_mapping_answers(site, name)[0]["publicIp"])
    assert_closed_from_outside(s, [game], public, ["10.67.0.0/24"])  # the filter is back
