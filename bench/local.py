"""``local`` benchmark: sync and destroy of a 50-VM cloudlet in network
namespaces on this host, whole CLI processes, and the cost per VM; then
whether every port mapping answers. Figures are printed, never asserted.
Floor (issue 10): a 50-VM sync within 30 s on 2 cores. Needs root.

    .venv/bin/python bench/local.py [VMS]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

VMS = int(sys.argv[1]) if len(sys.argv) > 1 else 50
EXPOSED = 10  # VMs behind the root LB; the rest are plain VMs


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
    with tempfile.TemporaryDirectory(prefix="cloudlet-bench-local-") as tmp:
        state, path = Path(tmp) / "state", Path(tmp) / "bench.yaml"
        path.write_text(spec(VMS))
        took, proc = cli(state, "sync", str(path), "--yes", "--json", "--parallelism", "10")
        report = json.loads(proc.stdout)
        print(
            f"local sync of {VMS} VMs ({len(report['actions'])} actions): {took:.2f} s, "
            f"{took / VMS * 1000:.0f} ms per VM; outcome {report['outcome']}; floor 30 s"
        )
        noop, _ = cli(state, "sync", str(path), "--yes", "--json")
        print(f"local no-op sync: {noop:.2f} s")
        _, st = cli(state, "status", "bench-local", "--json")
        mappings = json.loads(st.stdout)["portMappings"]
        answered = sum(_answers(m) for m in mappings)
        print(f"port mappings answering from the host: {answered} of {len(mappings)}")
        took, proc = cli(state, "destroy", "bench-local", "--yes")
        print(
            f"local destroy: {took:.2f} s, {took / VMS * 1000:.0f} ms per VM "
            f"(exit {proc.returncode})"
        )


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
