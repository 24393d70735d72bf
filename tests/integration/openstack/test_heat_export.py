"""`cloudlet export heat` checked by Heat itself, on the test cloud.

Heat's own parser and schema (``POST /validate``, as the ``osci-demo``
user) accept each example's template and refuse a broken one, so the
validation is not a rubber stamp; then the OpenStack example's template is
created as a stack and must hold the servers and ports the engine would
make, named and tagged as the engine names and tags them.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import openstack
import pytest
import yaml
from conftest import EXAMPLES, cli, ok
from osconsole import Console, cloud_config, eventually

from cloudlet.model.expand import expand
from cloudlet.model.load import load_file

TEMPLATES = ["no-router.yaml", "router.yaml", "floating-ip.yaml", "openstack.yaml"]


@pytest.fixture(scope="module", autouse=True)
def cloud() -> None:
    cloud_config()


@pytest.fixture(scope="module")
def conn() -> Any:
    c = openstack.connect(cloud="osci-demo")
    yield c
    c.close()


def export(example: Path, tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / "stack.yaml"
    ok(cli("export", "heat", example, "-o", out, state_dir=tmp_path / "state"))
    return dict(yaml.safe_load(out.read_text()))


@pytest.mark.parametrize("name", TEMPLATES)
def test_heat_validates_every_example(conn: Any, tmp_path: Path, name: str) -> None:
    template = export(EXAMPLES / name, tmp_path)
    answer = conn.orchestration.validate_template(template=template)
    assert "external_network" in answer["Parameters"]
    assert answer["Parameters"]["external_network"]["Default"] == "public"


def test_heat_validates_the_platform_vm(conn: Any, tmp_path: Path) -> None:
    """``--platform-vm``: the onboarding server is one Heat accepts."""
    out = tmp_path / "stack.yaml"
    flags = ["--platform-vm", "cirros,m1.tiny,internal", "--index", "https://m.example/simple"]
    argv = ["export", "heat", EXAMPLES / "openstack.yaml", *flags, "--etcd", "10.0.0.11:2379"]
    ok(cli(*argv, "-o", out, state_dir=tmp_path / "state"))
    template = dict(yaml.safe_load(out.read_text()))
    assert template["resources"]["cloudlet_platform_vm"]["properties"]["user_data_format"] == "RAW"
    conn.orchestration.validate_template(template=template)


def test_heat_refuses_a_broken_template(conn: Any, tmp_path: Path) -> None:
    template = export(EXAMPLES / "openstack.yaml", tmp_path)
    server = next(r for r in template["resources"].values() if r["type"] == "OS::Nova::Server")
    server["properties"]["no_such_property"] = 1
    with pytest.raises(openstack.exceptions.HttpException, match="no_such_property"):
        conn.orchestration.validate_template(template=template)


def test_the_stack_holds_what_the_engine_would_make(conn: Any, tmp_path: Path) -> None:
    example = EXAMPLES / "openstack.yaml"
    template = export(example, tmp_path)
    cloudlet = load_file(str(example))[0]
    kinds = Counter(r.kind for r in expand(cloudlet).resources)
    owner = cloudlet.name
    console = Console()
    assert console.counts(owner) == Counter(), "the example's owner must start empty"
    stack = conn.orchestration.create_stack(name=f"heat-{owner}", template=template)
    try:
        deadline = time.monotonic() + 600
        while (got := conn.orchestration.get_stack(stack.id)).status == "CREATE_IN_PROGRESS":
            assert time.monotonic() < deadline, "stack still in progress after 600 s"
            time.sleep(1)
        assert got.status == "CREATE_COMPLETE", got.status_reason
        tagged = console.tagged(owner)
        assert len(tagged["server"]) == kinds["vm"]
        assert len(tagged["port"]) == kinds["port"] + kinds["vip"]
        assert len(tagged["network"]) == kinds["network"]
        ids = sorted(s.metadata["cloudlet.id"] for s in tagged["server"])
        assert ids == sorted(r.id for r in expand(cloudlet).resources if r.kind == "vm")
        assert all(p.name == f"{owner}:{marks_id(p)}" for p in tagged["port"])
        # as the engine makes them: a port with no group is unfiltered (port
        # security off), one with groups has them (an empty list would drop all)
        wanted = expand(cloudlet).by_id()
        for port in tagged["port"]:
            r = wanted[marks_id(port)]
            if r.kind == "port":
                groups = r.attrs["securityGroups"]
                assert isinstance(groups, tuple)
                assert port.is_port_security_enabled is bool(groups), r.id
                assert len(port.security_group_ids) == len(groups), r.id
    finally:
        conn.orchestration.delete_stack(stack.id)
        conn.orchestration.wait_for_delete(stack, interval=1, wait=600)
        # Heat counts a server deleted once Nova says DELETED; Nova lists it a while longer
        assert eventually(lambda: console.counts(owner), lambda c: c == Counter()) == Counter()
        console.close()


def marks_id(obj: Any) -> str:
    return next(t for t in obj.tags if t.startswith("cloudlet.id="))[len("cloudlet.id=") :]
