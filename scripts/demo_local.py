"""``make demo-local``: real packets through a cloudlet on this host.

Syncs examples/local.yaml on the ``local`` platform (network namespaces,
haproxy, nginx), curls every port mapping that ``status`` reports from the
host (the remapped one included; traffic only to the platform's own
198.18.0.0/15 range), deletes the LB VM's namespace behind the engine's
back, shows the drift, heals it, curls again, destroys, and checks that no
namespace of the cloudlet is left. Needs root.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "local.yaml"
NAME = "edge-local"
RANGE = ipaddress.ip_network("198.18.0.0/15")
BOLD, PLAIN = ("\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "")


def cloudlet(state: Path, *args: str, check: bool = True, quiet: bool = False) -> str:
    print(f"\n{BOLD}$ cloudlet {' '.join(args)}{PLAIN}", flush=True)
    argv = [sys.executable, "-m", "cloudlet", "--state-dir", str(state), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if not quiet:
        print(proc.stdout + proc.stderr, end="", flush=True)
    if check and proc.returncode not in (0, 2):
        raise SystemExit(f"cloudlet {args[0]} failed ({proc.returncode})")
    return proc.stdout


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


def curl_all(state: Path) -> bool:
    status = json.loads(cloudlet(state, "status", NAME, "--json", quiet=True))
    good = True
    for m in status["portMappings"]:
        got = probe(m)
        note = " (remapped)" if m["publicPort"] != m["port"] else ""
        print(f"  {m['protocol']} {m['publicIp']}:{m['publicPort']}{note} -> {got}")
        good &= got == f"vm/{m['target']}"
    return good


def main() -> int:
    if os.geteuid() != 0:
        print("make demo-local needs root (network namespaces)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="cloudlet-demo-local-") as tmp:
        state = Path(tmp)
        try:
            cloudlet(state, "sync", str(EXAMPLE), "--yes")
            ok = curl_all(state)
            lb_vm = _lb_vm_namespace(state)
            print(f"\n{BOLD}$ ip netns del {lb_vm}   # the LB VM vanishes{PLAIN}")
            for pid in subprocess.run(
                ["ip", "netns", "pids", lb_vm], capture_output=True, text=True
            ).stdout.split():
                subprocess.run(["kill", "-9", pid], check=False)
            subprocess.run(["ip", "netns", "del", lb_vm], check=True)
            cloudlet(state, "status", NAME)
            cloudlet(state, "sync", str(EXAMPLE), "--yes")
            ok &= curl_all(state)
        finally:
            cloudlet(state, "destroy", NAME, "--yes", check=False)
        left = [n for n in _netns() if n.startswith(f"cl-{NAME}-")]
        print(f"\nnamespaces left: {left or 'none'}")
        return 0 if ok and not left else 1


def _lb_vm_namespace(state: Path) -> str:
    from cloudlet.providers.local.site import Site

    site = Site(state / "local", NAME)
    vm = next(r for r in site.records.all() if r.id == "vm/root.0")
    return site.ns(vm.uid)


def _netns() -> list[str]:
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True).stdout
    return [str(n["name"]) for n in json.loads(out or "[]")]


if __name__ == "__main__":
    raise SystemExit(main())
