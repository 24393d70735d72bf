"""``make demo-local``: real packets through cloudlets on this host.

One cloudlet per data path (no-router, router, floating-ip) on the
``local`` platform (network namespaces, haproxy, nginx, keepalived), all
at once; every port mapping that ``status --json`` reports is curled from
the host (TCP: ``GET /``; UDP: a datagram), the remapped ones included, and
must answer with its target's resource id. The no-router cloudlet's LB has
``redundancy: vip``: while a client opens a new connection to the VIP every
50 ms, the namespace of the LB VM holding the VIP is removed out of band;
the demo prints how long traffic stopped and how many attempts failed,
shows the drift, heals it with a sync, curls again, and destroys all three,
checking that no namespace of theirs is left. Traffic goes only to the
platform's own range (198.18.0.0/15). Needs root.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from vipfailover import (  # noqa: E402
    FLOOR,
    INTERVAL,
    Probe,
    fail_over,
    holders,
    lb_member_namespaces,
    wait_until,
)

RANGE = ipaddress.ip_network("198.18.0.0/15")
#: Lines of a sync's output left out: each step done, each create or delete
#: planned (replacements and the summaries stay).
STEP = re.compile(r"^  (created|deleted|updated|replaced|adopted) |^    [+-] ")
BOLD, PLAIN = ("\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "")
#: (cloudlet, data path, internal CIDR, the root LB's redundancy)
CLOUDLETS = [
    ("edge-direct", "no-router", "10.61.0.0/24", "vip"),
    ("edge-routed", "router", "10.62.0.0/24", "none"),
    ("edge-fip", "floating-ip", "10.63.0.0/24", "none"),
]
VIP_CLOUDLET = "edge-direct"


def spec(name: str, data_path: str, cidr: str, redundancy: str) -> str:
    """game and chat both ask for tcp/443 on the shared root LB: chat's
    public port is remapped; game also answers on udp/5000."""
    text = textwrap.dedent(
        f"""\
        apiVersion: cloudlet/v1
        kind: Cloudlet
        metadata: {{name: {name}}}
        spec:
          platform: {{type: local}}
          dataPath: {data_path}
          networks: [{{name: internal, cidr: {cidr}}}]
          loadBalancers:
            - {{name: root, type: shared, network: internal, redundancy: {redundancy}}}
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
    lb_subnet = "  lbSubnet: 192.168.100.0/24\n"  # the floating-ip path's translated subnet
    return text.replace("  dataPath: floating-ip\n", "  dataPath: floating-ip\n" + lb_subnet)


def say(text: str) -> None:
    print(f"\n{BOLD}{text}{PLAIN}", flush=True)


def cloudlet(state: Path, *args: str, check: bool = True, quiet: bool = False) -> str:
    if not quiet:
        say(f"$ cloudlet {' '.join(args)}")
    argv = [sys.executable, "-m", "cloudlet", "--state-dir", str(state), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if not quiet:
        shown = [line for line in proc.stdout.splitlines() if not STEP.match(line)]
        print("\n".join(shown) + "\n" + proc.stderr, end="", flush=True)
    if check and proc.returncode not in (0, 2):
        raise SystemExit(f"cloudlet {args[0]} failed ({proc.returncode})\n{proc.stderr}")
    return proc.stdout


def status(state: Path, name: str) -> dict[str, list[dict[str, object]]]:
    found: dict[str, list[dict[str, object]]] = json.loads(
        cloudlet(state, "status", name, "--json", quiet=True)
    )
    return found


def probe(mapping: dict[str, object]) -> str:
    ip, port = str(mapping["publicIp"]), int(str(mapping["publicPort"]))
    assert ipaddress.ip_address(ip) in RANGE, ip  # the platform's own addresses only
    try:
        if mapping["protocol"] == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(3)
                s.sendto(b"hi", (ip, port))
                return s.recv(256).decode().strip()
        with urllib.request.urlopen(f"http://{ip}:{port}/", timeout=5) as resp:
            return resp.read().decode().splitlines()[0]
    except OSError as err:
        return f"no answer ({err})"


def curl_all(state: Path, name: str) -> bool:
    """Every port mapping of ``name``, from the host; whether all answered right."""
    mappings = status(state, name)["portMappings"]
    say(f"# {name}: {len(mappings)} port mappings, from this host")
    good = bool(mappings)
    for m in mappings:
        got = probe(m)
        right = got == f"vm/{m['target']}"
        note = f" (remapped from {m['port']})" if m["publicPort"] != m["port"] else ""
        verdict = "ok" if right else "WRONG"
        print(f"  {m['protocol']} {m['publicIp']}:{m['publicPort']}{note} -> {got}  [{verdict}]")
        good &= right
    return good


def failover(state: Path) -> bool:
    """The VIP master LB VM's namespace removed under traffic, then the heal."""
    (vip_mapping, *_) = (m for m in status(state, VIP_CLOUDLET)["portMappings"])
    vip, port = str(vip_mapping["publicIp"]), int(str(vip_mapping["publicPort"]))
    members = lb_member_namespaces(state, VIP_CLOUDLET, "root")
    say(
        f"# VIP failover: a new connection to {vip}:{port} every {INTERVAL * 1000:.0f} ms; "
        "the LB VM holding the VIP loses its namespace (processes killed, ip netns del)"
    )
    result = fail_over(vip, port, members)
    print(f"  removed: {result.master}")
    print(f"  VIP now held by: {result.survivor or 'no single holder!'}")
    print(
        f"  traffic gap: {result.gap:.3f} s (floor {FLOOR} s); "
        f"{result.failed} of {result.attempts} attempts after the loss failed"
    )
    print(f"  answered by: {', '.join(sorted(result.answered_by))}")
    good = result.survivor is not None and result.gap <= FLOOR
    cloudlet(state, "status", VIP_CLOUDLET)
    heal(state, vip, port)
    members = lb_member_namespaces(state, VIP_CLOUDLET, "root")
    one = len(holders(members, vip)) == 1
    print(f"  LB VMs: {len(members)}; holders of the VIP: {len(holders(members, vip))}")
    return good and one and curl_all(state, VIP_CLOUDLET)


def heal(state: Path, vip: str, port: int) -> None:
    """The sync that re-creates the lost LB VM, with the client still at it."""
    client = Probe(vip, port)
    try:
        wait_until("the VIP answers", lambda: client.answered_since(0) >= 3)
        t0 = time.monotonic()
        cloudlet(state, "sync", str(state / f"{VIP_CLOUDLET}.yaml"), "--yes")
        t1 = time.monotonic()
        wait_until("the VIP answers after the heal", lambda: client.answered_since(t1) >= 3)
    finally:
        shots = client.stop()
    ok_at = [s.t for s in shots if s.ok]
    during = [s for s in shots if t0 <= s.t <= t1]
    gap = max(b - a for a, b in itertools.pairwise(ok_at))
    print(
        f"  the heal took {t1 - t0:.1f} s; meanwhile {sum(not s.ok for s in during)} of "
        f"{len(during)} attempts failed, longest gap {gap:.3f} s "
        "(the lost VM is re-made and joins as backup; the survivor keeps serving)"
    )


def main() -> int:
    if os.geteuid() != 0:
        print("make demo-local needs root (network namespaces)", file=sys.stderr)
        return 1
    ok = True
    with tempfile.TemporaryDirectory(prefix="cloudlet-demo-local-") as tmp:
        state = Path(tmp)
        try:
            for name, data_path, cidr, redundancy in CLOUDLETS:
                path = state / f"{name}.yaml"
                path.write_text(spec(name, data_path, cidr, redundancy))
                cloudlet(state, "sync", str(path), "--yes")
            for name, *_ in CLOUDLETS:
                ok &= curl_all(state, name)
            ok &= failover(state)
        finally:
            for name, *_ in CLOUDLETS:
                cloudlet(state, "destroy", name, "--yes", check=False)
        left = [n for n in _netns() if any(n.startswith(f"cl-{c}-") for c, *_ in CLOUDLETS)]
        say(f"namespaces left: {left or 'none'}")
        print("demo: " + ("every mapping answered, the VIP failed over" if ok else "FAILED"))
        return 0 if ok and not left else 1


def _netns() -> list[str]:
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True).stdout
    return [str(n["name"]) for n in json.loads(out or "[]")]


if __name__ == "__main__":
    raise SystemExit(main())
