"""Shared by the ``local`` platform's tests: specs, the host-state snapshot,
the fixture that leaves the host as it found it, and traffic to public
addresses (only inside the platform's 198.18.0.0/15, which routes to
namespaces the tests made)."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudlet.providers.local.provider import AUTO_RANGE, RUNTIME, Site


def cli(
    *args: str | Path, state_dir: Path, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess (self-contained: property tests import this too)."""
    argv = [sys.executable, "-m", "cloudlet", "--state-dir", str(state_dir), *map(str, args)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDLET_")}
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def ok(proc: subprocess.CompletedProcess[str], code: int = 0) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == code, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


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
    started for ``state`` (their command lines name files under it).

    Another run's cloudlets (other tests, in parallel) are not this test's
    business: namespaces and host legs of other sites are left out, by the
    platform's naming (``cl-NAME-KEY``, ``clKEYh``); everything else on the
    host counts."""

    def ip_json(*args: str) -> list[dict[str, object]]:
        out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True).stdout
        return list(json.loads(out or "[]"))

    names = os.listdir(state / "local") if (state / "local").is_dir() else []
    mine = [Site(state / "local", name) for name in names]

    def counts(name: str, *, ns: bool) -> bool:
        if ns and name.startswith("cl-"):
            return any(name == s.fabric or name.startswith(s.fabric + "-") for s in mine)
        if not ns and re.fullmatch(r"cl[0-9a-f]{6}h", name):
            return any(name == s.host_if for s in mine)
        return True

    procs = sorted(p.name for p in Path("/proc").iterdir() if p.name.isdigit() and _ours(p, state))
    nft = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    routes = ip_json("-4", "route", "show")
    return {
        "netns": sorted(
            n for n in (str(x["name"]) for x in ip_json("netns", "list")) if counts(n, ns=True)
        ),
        "links": sorted(
            n for n in (str(x["ifname"]) for x in ip_json("link", "show")) if counts(n, ns=False)
        ),
        "routes": sorted(str(r.get("dst")) for r in routes if counts(str(r.get("dev")), ns=False)),
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


@pytest.fixture(name="site")
def local_site(tmp_path: Path) -> Iterator[Path]:
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
