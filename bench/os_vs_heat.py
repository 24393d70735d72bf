"""OpenStack benchmark: a 20-server cloudlet synced by cloudlet, and by Heat, on the test cloud.

Figures (printed, never asserted): cloudlet's sync wall time; the lower
bound from the provider's own per-call latencies (max of the critical path
of measured step durations and the total work over the parallelism) and
the ratio; then Heat creating the same desired state (``export heat``) as
one stack on the same cloud, and the ratio of the two. One run each; the
cloud (nova's ~3 s of work per server on two cores) dominates both. Run with
``.venv/bin/python bench/os_vs_heat.py`` (the cloud is started if it is not up).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration" / "openstack"))
sys.path.insert(0, str(Path(__file__).parent))

import cloudenv  # noqa: E402
from bounds import step_bound  # noqa: E402

from cloudlet.engine.sync import Engine, SyncOptions  # noqa: E402
from cloudlet.model.expand import expand  # noqa: E402
from cloudlet.model.spec import (  # noqa: E402
    Cloudlet,
    CloudletSpec,
    Defaults,
    Expose,
    LoadBalancer,
    Metadata,
    Network,
    Platform,
    PortSpec,
    Rule,
    SecurityGroup,
    Vm,
)
from cloudlet.model.validate import validate  # noqa: E402
from cloudlet.planner import plan_actions  # noqa: E402
from cloudlet.providers.openstack.heat import render_heat  # noqa: E402
from cloudlet.providers.openstack.provider import OpenstackProvider  # noqa: E402
from cloudlet.store.records import StateRepo  # noqa: E402
from cloudlet.store.sqlite import open_store  # noqa: E402

PARALLELISM = 10
PLATFORM = Platform(type="openstack", cloud="osci-demo", external_network="public")


def twenty_servers(name: str) -> Cloudlet:
    """floating-ip path: a root LB VM and 19 VMs behind it, each exposed: 20 servers."""
    vms = [
        Vm(f"vm-{i}", "internal", expose=Expose("root", [PortSpec(8000 + i)])) for i in range(19)
    ]
    spec = CloudletSpec(
        platform=PLATFORM,
        data_path="floating-ip",
        defaults=Defaults(image="ubuntu-22.04", flavor="m1.small"),
        networks=[Network("internal", "10.50.0.0/24")],
        security_groups=[SecurityGroup("web", [Rule(ports="8000-8018")])],
        load_balancers=[LoadBalancer("root", "internal", security_groups=["web"])],
        vms=vms,
    )
    cloudlet = Cloudlet("cloudlet/v1", "Cloudlet", Metadata(name), spec)
    assert validate(cloudlet) == [], validate(cloudlet)
    return cloudlet


def cloudlet_sync(cloudlet: Cloudlet) -> dict[str, Any]:
    provider = OpenstackProvider(PLATFORM)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp))
        engine = Engine(StateRepo(store), provider, SyncOptions(parallelism=PARALLELISM))
        plan = plan_actions(cloudlet.name, expand(cloudlet).resources, [])
        t = time.perf_counter()
        report = engine.sync(cloudlet)
        out["sync_s"] = round(time.perf_counter() - t, 2)
        out["converged"] = report.converged
        bound = step_bound(plan.graph, report.steps, PARALLELISM)
        out.update({k: round(v, 2) for k, v in bound.items()})
        t = time.perf_counter()
        out["noop_plan_actions"] = len(engine.plan(cloudlet).actions)
        out["noop_plan_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        out["destroyed"] = engine.destroy(cloudlet.name).converged
        out["destroy_s"] = round(time.perf_counter() - t, 2)
        store.close()
    provider.close()
    return out


def heat_stack(cloudlet: Cloudlet) -> dict[str, Any]:
    import openstack

    conn = openstack.connect(cloud="osci-demo")
    template = render_heat(expand(cloudlet))
    out: dict[str, Any] = {"heat_resources": len(template["resources"])}
    t = time.perf_counter()
    stack = conn.orchestration.create_stack(name=cloudlet.name, template=template)
    while (status := conn.orchestration.get_stack(stack.id).status) == "CREATE_IN_PROGRESS":
        time.sleep(0.5)
    out["create_s"] = round(time.perf_counter() - t, 2)
    out["status"] = status
    servers = list(conn.compute.servers(tags=f"cloudlet.owner={cloudlet.name}"))
    out["servers"] = len(servers)
    t = time.perf_counter()
    conn.orchestration.delete_stack(stack.id)
    conn.orchestration.wait_for_delete(stack, interval=0.5, wait=900)
    out["delete_s"] = round(time.perf_counter() - t, 2)
    conn.close()
    return out


def main() -> None:
    os.environ["OS_CLIENT_CONFIG_FILE"] = str(cloudenv.ensure_cloud_up())
    engine_spec = twenty_servers("bench-os")
    resources = expand(engine_spec).resources
    figures: dict[str, Any] = {
        "servers": sum(1 for r in resources if r.kind == "vm"),
        "resources": len(resources),
        "parallelism": PARALLELISM,
    }
    figures["cloudlet"] = cloudlet_sync(engine_spec)
    figures["heat"] = heat_stack(twenty_servers("bench-heat"))
    figures["ratio_cloudlet_to_heat"] = round(
        figures["cloudlet"]["sync_s"] / figures["heat"]["create_s"], 2
    )
    print(json.dumps(figures, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
