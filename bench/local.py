"""``local`` benchmark: sync and destroy of a 50-VM cloudlet in network
namespaces on this host, whole CLI processes, and the cost per VM; then
whether every port mapping answers. Then the VIP failover gap: an LB with
``redundancy: vip``, a new connection to its VIP every 50 ms from the host,
the master LB VM's namespace removed out of band (``vipfailover.py``), the
longest time without an answer; healed by a sync between repetitions.
Figures are printed, never asserted. Floors (issue 10): a 50-VM sync within
30 s on 2 cores; a failover gap of at most 1.5 s. Needs root.

    .venv/bin/python bench/local.py [VMS] [--failovers N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from vipfailover import FLOOR, INTERVAL, fail_over, lb_member_namespaces, wait_until

EXPOSED = 10  # VMs behind the root LB; the rest are plain VMs
VIP_SPEC = textwrap.dedent(
    """\
    apiVersion: cloudlet/v1
    kind: Cloudlet
    metadata: {name: bench-vip}
    spec:
      platform: {type: local}
      dataPath: no-router
      networks: [{name: internal, cidr: 10.78.0.0/24}]
      loadBalancers: [{name: root, type: shared, network: internal, redundancy: vip}]
      vms:
        - name: game
          network: internal
          expose: {loadBalancer: root, ports: [{protocol: tcp, port: 443}]}
    """
)


def spec(vms: int) -> str:
    lines = [
        "apiVersion: cloudlet/v1",
        "kind: Cloudlet",
        "metadata: {name: bench-local}",
        "spec:",
        "  platform: {type: local}",
        "  dataPath: no-router",
        "  networks: [{name: internal, cidr: 10.77.0.0/22}]",
        "  loadBalancers: [{name: root, type: shared, network: internal}]",
        "  vms:",
    ]
    for i in range(vms):
        expose = (
            ", expose: {loadBalancer: root, ports: [{protocol: tcp, port: 80}]}"
            if i < EXPOSED
            else ""
        )
        lines.append(f"    - {{name: vm-{i}, network: internal{expose}}}")
    return "\n".join(lines) + "\n"


def cli(state: Path, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    argv = [sys.executable, "-m", "cloudlet", "--state-dir", str(state), *args]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return time.perf_counter() - t0, proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("vms", nargs="?", type=int, default=50)
    parser.add_argument("--failovers", type=int, default=5, help="repetitions (0: none)")
    args = parser.parse_args()
    scale(args.vms)
    if args.failovers:
        failovers(args.failovers)


def scale(vms: int) -> None:
    with tempfile.TemporaryDirectory(prefix="cloudlet-bench-local-") as tmp:
        state, path = Path(tmp) / "state", Path(tmp) / "bench.yaml"
        path.write_text(spec(vms))
        took, proc = cli(state, "sync", str(path), "--yes", "--json", "--parallelism", "10")
        report = json.loads(proc.stdout)
        print(
            f"local sync of {vms} VMs ({len(report['actions'])} actions): {took:.2f} s, "
            f"{took / vms * 1000:.0f} ms per VM; outcome {report['outcome']}; floor 30 s"
        )
        noop, _ = cli(state, "sync", str(path), "--yes", "--json")
        print(f"local no-op sync: {noop:.2f} s")
        _, st = cli(state, "status", "bench-local", "--json")
        mappings = json.loads(st.stdout)["portMappings"]
        answered = sum(_answers(m) for m in mappings)
        print(f"port mappings answering from the host: {answered} of {len(mappings)}")
        took, proc = cli(state, "destroy", "bench-local", "--yes")
        print(
            f"local destroy: {took:.2f} s, {took / vms * 1000:.0f} ms per VM "
            f"(exit {proc.returncode})"
        )


def failovers(runs: int) -> None:
    """``runs`` failovers of one LB VIP, each healed by a sync before the next."""
    gaps: list[float] = []
    failed: list[int] = []
    with tempfile.TemporaryDirectory(prefix="cloudlet-bench-vip-") as tmp:
        state, path = Path(tmp) / "state", Path(tmp) / "vip.yaml"
        path.write_text(VIP_SPEC)
        try:
            _, proc = cli(state, "sync", str(path), "--yes")
            if proc.returncode != 0:
                print(f"VIP failover: the sync failed (exit {proc.returncode})\n{proc.stderr}")
                return
            (mapping,) = _status(state)["portMappings"]
            vip, port = str(mapping["publicIp"]), int(mapping["publicPort"])
            for _ in range(runs):
                measured = fail_over(vip, port, lb_member_namespaces(state, "bench-vip", "root"))
                gaps.append(measured.gap)
                failed.append(measured.failed)
                cli(state, "sync", str(path), "--yes")  # the heal: the lost LB VM comes back
                wait_until("no drift after the heal", lambda: not _status(state)["drift"])
                time.sleep(1.0)  # the new backup's keepalived hears ten adverts
        finally:
            cli(state, "destroy", "bench-vip", "--yes")
    if not gaps:
        return
    median = statistics.median(gaps)
    print(
        f"VIP failover gap, a new connection every {INTERVAL * 1000:.0f} ms, master LB VM's "
        f"namespace removed, {len(gaps)} runs: median {median:.3f} s, max {max(gaps):.3f} s "
        f"(floor ≤ {FLOOR} s; median/floor {median / FLOOR:.2f}, max/floor "
        f"{max(gaps) / FLOOR:.2f}); failed attempts per run {failed}; gaps "
        + ", ".join(f"{g:.3f}" for g in gaps)
    )


def _status(state: Path) -> dict[str, list[dict[str, object]]]:
    _, proc = cli(state, "status", "bench-vip", "--json")
    found: dict[str, list[dict[str, object]]] = json.loads(proc.stdout)
    return found


def _answers(mapping: dict[str, object]) -> bool:
    ip, port = mapping["publicIp"], mapping["publicPort"]
    assert str(ip).startswith("198.1"), ip  # the platform's own range, nothing else
    try:
        with urllib.request.urlopen(f"http://{ip}:{port}/", timeout=5) as resp:
            return resp.read().decode().splitlines()[0] == f"vm/{mapping['target']}"
    except OSError:
        return False


if __name__ == "__main__":
    main()
