"""vSphere benchmark: sync of a 50-VM cloudlet on govmomi's vCenter simulator.

Figures (printed, never asserted): the sync's wall time on vcsim, the same
spec's sync on the fake provider at zero latency (the engine's own cost),
their ratio (what the vSphere API calls cost on top), a no-op re-plan
(observe + diff) on vcsim, and a destroy. Run with
``.venv/bin/python bench/vsphere.py`` (``make vcsim`` builds the simulator).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from vcsim import PLATFORM, running  # noqa: E402

from cloudlet.engine.sync import Engine, SyncOptions  # noqa: E402
from cloudlet.model.expand import expand  # noqa: E402
from cloudlet.model.spec import (  # noqa: E402
    Cloudlet,
    CloudletSpec,
    Cluster,
    Expose,
    LoadBalancer,
    Metadata,
    Network,
    PortSpec,
    Vm,
)
from cloudlet.model.validate import validate  # noqa: E402
from cloudlet.providers.base import Provider  # noqa: E402
from cloudlet.providers.fake import FakeProvider  # noqa: E402
from cloudlet.store.records import StateRepo  # noqa: E402
from cloudlet.store.sqlite import open_store  # noqa: E402

PARALLELISM = 10


def fifty_vms(name: str = "bench-vs") -> Cloudlet:
    """1 LB VM + a 3-master/6-worker cluster + 40 VMs (half exposed): 50 VMs."""
    nets = [Network("front", "10.40.0.0/24"), Network("back", "10.41.0.0/23")]
    vms = [
        Vm(
            f"vm-{i}",
            "front" if i % 2 else "back",
            flavor=("m1.small", "m1.medium", "m1.large")[i % 3],
            expose=Expose("root", [PortSpec(8000 + i)]) if i % 2 else None,
        )
        for i in range(40)
    ]
    spec = CloudletSpec(
        platform=PLATFORM,
        networks=nets,
        load_balancers=[LoadBalancer("root", "front")],
        clusters=[Cluster("apps", "back", masters=3, workers=6, vip=True)],
        vms=vms,
    )
    cloudlet = Cloudlet("cloudlet/v1", "Cloudlet", Metadata(name), spec)
    assert validate(cloudlet) == [], validate(cloudlet)
    return cloudlet


def timed_sync(provider: Provider, cloudlet: Cloudlet, state: Path) -> dict[str, float]:
    store = open_store(state)
    engine = Engine(StateRepo(store), provider, SyncOptions(parallelism=PARALLELISM))
    out: dict[str, float] = {}
    t = time.perf_counter()
    report = engine.sync(cloudlet)
    out["sync_s"] = time.perf_counter() - t
    out["converged"] = float(report.converged)
    t = time.perf_counter()
    out["noop_plan_actions"] = len(engine.plan(cloudlet).actions)
    out["noop_plan_s"] = time.perf_counter() - t
    t = time.perf_counter()
    out["destroyed"] = float(engine.destroy(cloudlet.name).converged)
    out["destroy_s"] = time.perf_counter() - t
    store.close()
    return out


def main() -> None:
    cloudlet = fifty_vms()
    resources = expand(cloudlet).resources
    figures: dict[str, object] = {
        "vms": sum(1 for r in resources if r.kind == "vm"),
        "resources": len(resources),
        "parallelism": PARALLELISM,
    }
    with tempfile.TemporaryDirectory() as tmp:
        fake = FakeProvider(Path(tmp) / "fake")
        fake_spec = attrs.evolve(cloudlet, spec=attrs.evolve(cloudlet.spec, platform=PLATFORM))
        figures["fake"] = timed_sync(fake, fake_spec, Path(tmp) / "fake")
        fake.close()
        with running() as sim:
            provider = sim.provider()
            figures["vsphere"] = timed_sync(provider, cloudlet, Path(tmp) / "vsphere")
            provider.close()
    vs, fk = figures["vsphere"], figures["fake"]
    assert isinstance(vs, dict) and isinstance(fk, dict)
    figures["sync_ratio_vsphere_to_fake"] = round(vs["sync_s"] / fk["sync_s"], 2)
    print(json.dumps(figures, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
