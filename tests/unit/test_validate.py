"""Semantic validation: every check, located at the offending value."""

from __future__ import annotations

import re

import attrs
import pytest

from cloudlet.errors import SpecError
from cloudlet.model.load import load_text
from cloudlet.model.spec import (
    Cloudlet,
    CloudletSpec,
    Expose,
    LoadBalancer,
    Metadata,
    Network,
    PortSpec,
    Vm,
)
from cloudlet.model.validate import render_path, validate, validate_documents

BASE = """\
apiVersion: cloudlet/v1
kind: Cloudlet
metadata:
  name: site-a
  labels: {region: eu-1}
spec:
  platform: {type: fake}
  dataPath: no-router
  networks:
    - {name: internal, cidr: 10.0.0.0/24}
    - {name: backend, cidr: 10.1.0.0/24}
  securityGroups:
    - name: web
      rules:
        - {protocol: tcp, ports: "443", remote: 0.0.0.0/0}
  loadBalancers:
    - {name: root, network: internal, securityGroups: [web]}
    - {name: solo, type: dedicated, network: internal}
  clusters:
    - name: apps
      network: backend
      workers: 2
      expose: {loadBalancer: root, ports: [{port: 8443}]}
  vms:
    - name: game
      network: internal
      securityGroups: [web]
      expose: {loadBalancer: root, ports: [{port: 443}]}
    - name: chat
      network: internal
      expose: {loadBalancer: solo, ports: [{port: 443}]}
"""


def edit(*pairs: str, base: str = BASE) -> str:
    """``base`` with each (old, new) pair replaced; every old must occur once."""
    text = base
    for old, new in zip(pairs[::2], pairs[1::2], strict=True):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_text(text, "F.yaml")
    lines = info.value.render().splitlines()
    for line in lines:
        assert re.match(r"^F\.yaml:\d+:\d+: ", line), line
    return lines


def one(text: str) -> str:
    lines = problems(text)
    assert len(lines) == 1, lines
    return lines[0]


def test_base_is_valid() -> None:
    (c,) = load_text(BASE, "F.yaml")
    assert validate(c) == []


def test_render_path() -> None:
    assert render_path(("spec", "networks", 0, "cidr")) == "spec.networks[0].cidr"
    assert render_path(()) == ""


# --- header and names -------------------------------------------------------


def test_api_version_and_kind() -> None:
    lines = problems(
        edit(
            "apiVersion: cloudlet/v1", "apiVersion: cloudlet/v2", "kind: Cloudlet", "kind: Clodlet"
        )
    )
    assert lines[0].startswith("F.yaml:1:13: apiVersion: must be 'cloudlet/v1'")
    assert lines[1].startswith("F.yaml:2:7: kind: must be 'Cloudlet'")


@pytest.mark.parametrize("name", ["Site-a", "1site", "site_a", "site.a", "a" * 41, "''", "-a"])
def test_bad_cloudlet_names(name: str) -> None:
    line = one(edit("  name: site-a", f"  name: {name}"))
    assert line.startswith("F.yaml:4:9: metadata.name: invalid name")


def test_longest_name_is_fine() -> None:
    load_text(edit("  name: site-a", "  name: " + "a" * 40), "F.yaml")


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        ("{name: internal, cidr: 10.0.0.0/24}", "{name: Internal, cidr: 10.0.0.0/24}", "10:14"),
        ("    - name: web\n", "    - name: w.b\n", "13:13"),
        ("{name: solo,", "{name: solo.0,", "18:14"),
        ("    - name: apps\n", "    - name: apps_1\n", "20:13"),
        ("    - name: chat\n", "    - name: Chat\n", "29:13"),
    ],
)
def test_bad_object_names(old: str, new: str, where: str) -> None:
    lines = problems(edit(old, new))
    assert any(x.startswith(f"F.yaml:{where}: ") and "invalid name" in x for x in lines), lines


def test_duplicate_network_names() -> None:
    line = problems(
        edit("{name: backend, cidr: 10.1.0.0/24}", "{name: internal, cidr: 10.1.0.0/24}")
    )[0]
    assert line.startswith(
        "F.yaml:11:14: spec.networks[1].name: name 'internal' is already used by spec.networks[0]"
    )


def test_vm_lb_and_cluster_share_a_namespace() -> None:
    line = one(
        edit(
            "    - name: chat\n", "    - name: root\n", "{loadBalancer: solo", "{loadBalancer: root"
        )
    )
    assert line.startswith(
        "F.yaml:29:13: spec.vms[1].name: name 'root' is already used by spec.loadBalancers[0]"
    )
    lines = problems(edit("    - name: game\n", "    - name: apps\n"))
    assert lines[0].startswith(
        "F.yaml:25:13: spec.vms[0].name: name 'apps' is already used by spec.clusters[0]"
    )


def test_network_and_vm_may_share_a_name() -> None:
    load_text(
        edit(
            "    - name: game\n      network: internal\n",
            "    - name: internal\n      network: internal\n",
        ),
        "F.yaml",
    )


def test_duplicate_security_groups() -> None:
    text = edit("  loadBalancers:\n", "    - {name: web}\n  loadBalancers:\n")
    assert "name 'web' is already used by spec.securityGroups[0]" in one(text)


@pytest.mark.parametrize(
    ("labels", "what"),
    [
        ("{'a b': x}", "invalid label key"),
        ("{'': x}", "invalid label key"),
        ("{a: '" + "v" * 64 + "'}", "invalid label value"),
        ("{a: 'x y'}", "invalid label value"),
    ],
)
def test_labels(labels: str, what: str) -> None:
    line = one(edit("labels: {region: eu-1}", f"labels: {labels}"))
    assert line.startswith("F.yaml:5:") and what in line


def test_good_labels() -> None:
    load_text(
        edit("labels: {region: eu-1}", "labels: {app.kubernetes.io/name: x_y-Z.1, empty: ''}"),
        "F.yaml",
    )


# --- networks -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cidr", "message"),
    [
        ("10.0.0.1/24", "host bits are set in '10.0.0.1/24' (did you mean '10.0.0.0/24'?)"),
        ("10.0.0.0/8", "prefix /8 out of range /16../29"),
        ("10.0.0.0/30", "prefix /30 out of range"),
        ("10.0.0.0", "prefix /32 out of range"),
        ("banana", "not a valid CIDR: 'banana'"),
        ("10.0.0.0/33", "not a valid CIDR"),
        ("'fd00::/64'", "must be an IPv4 network"),
    ],
)
def test_bad_network_cidrs(cidr: str, message: str) -> None:
    line = one(edit("cidr: 10.0.0.0/24", f"cidr: {cidr}"))
    assert line.startswith(f"F.yaml:10:30: spec.networks[0].cidr: {message}")


def test_overlapping_networks() -> None:
    line = one(edit("cidr: 10.1.0.0/24", "cidr: 10.0.0.128/25"))
    assert line.startswith(
        "F.yaml:11:29: spec.networks[1].cidr: 10.0.0.128/25 overlaps network 'internal'"
    )


def test_lb_subnet_overlap_only_matters_on_floating_ip() -> None:
    text = edit("  dataPath: no-router\n", "  dataPath: no-router\n  lbSubnet: 10.1.0.0/16\n")
    load_text(text, "F.yaml")
    text = edit("dataPath: no-router", "dataPath: floating-ip", base=text)
    line = one(text)
    assert line.startswith("F.yaml:12:29: spec.networks[1].cidr: 10.1.0.0/24 overlaps lbSubnet")


def test_bad_lb_subnet() -> None:
    line = one(
        edit("  dataPath: no-router\n", "  dataPath: floating-ip\n  lbSubnet: 192.168.0.1/24\n")
    )
    assert line.startswith("F.yaml:9:13: spec.lbSubnet: host bits are set")


# --- references -------------------------------------------------------------------


def test_dangling_references_with_suggestions() -> None:
    text = edit(
        "      network: backend\n",
        "      network: backnd\n",
        "      securityGroups: [web]\n",
        "      securityGroups: [wbe, zzz]\n",
        "{loadBalancer: solo",
        "{loadBalancer: slo",
    )
    lines = problems(text)
    assert lines == [
        "F.yaml:21:16: spec.clusters[0].network: unknown network 'backnd'"
        " (did you mean 'backend'?)",
        "F.yaml:27:24: spec.vms[0].securityGroups[0]: unknown security group 'wbe'"
        " (did you mean 'web'?)",
        "F.yaml:27:29: spec.vms[0].securityGroups[1]: unknown security group 'zzz'",
        "F.yaml:31:30: spec.vms[1].expose.loadBalancer: unknown load balancer 'slo'"
        " (did you mean 'solo'?)",
    ]


def test_lb_references() -> None:
    lines = problems(
        edit(
            "{name: root, network: internal, securityGroups: [web]}",
            "{name: root, network: nowhere, securityGroups: [db]}",
        )
    )
    assert [x.split(": ")[1] for x in lines] == [
        "spec.loadBalancers[0].network",
        "spec.loadBalancers[0].securityGroups[0]",
    ]


# --- ports and rules -----------------------------------------------------------------


@pytest.mark.parametrize("port", ["0", "65536", "-1"])
def test_exposed_port_range(port: str) -> None:
    line = one(
        edit(
            "ports: [{port: 443}]}\n    - name: chat",
            f"ports: [{{port: {port}}}]}}\n    - name: chat",
        )
    )
    assert line.startswith("F.yaml:28:") and "out of range 1..65535" in line


def test_duplicate_port_within_one_target() -> None:
    line = one(
        edit(
            "[{port: 8443}]",
            "[{port: 8443}, {protocol: udp, port: 8443}, {port: 8443, protocol: tcp}]",
        )
    )
    assert (
        line.startswith("F.yaml:23:")
        and "spec.clusters[0].expose.ports[2].port: tcp/8443 is exposed twice" in line
    )


def test_shared_lb_remaps_collisions_so_they_are_fine() -> None:
    load_text(edit("{loadBalancer: solo", "{loadBalancer: root"), "F.yaml")


def test_dedicated_lb_collision_is_an_error() -> None:
    line = one(
        edit(
            "{loadBalancer: root, ports: [{port: 443}]}",
            "{loadBalancer: solo, ports: [{port: 443}]}",
        )
    )
    assert (
        line.startswith("F.yaml:31:")
        and "spec.vms[1].expose.ports[0].port: tcp/443 on dedicated load balancer 'solo'"
        " is already taken by 'game'"
        in line
    )


def test_dedicated_lb_distinguishes_protocols() -> None:
    load_text(
        edit(
            "{loadBalancer: root, ports: [{port: 443}]}",
            "{loadBalancer: solo, ports: [{port: 443, protocol: udp}]}",
        ),
        "F.yaml",
    )


@pytest.mark.parametrize(
    ("rule", "column", "message"),
    [
        ('{protocol: tcp, ports: "0"}', 34, "out of range"),
        ('{protocol: tcp, ports: "65536"}', 34, "out of range"),
        ('{protocol: udp, ports: "90-80"}', 34, "invalid port range '90-80': 90 > 80"),
        ('{protocol: tcp, ports: "http"}', 34, "invalid ports 'http'"),
        ('{protocol: tcp, ports: "1-2-3"}', 34, "invalid ports"),
        ('{protocol: tcp, ports: " 80"}', 34, "invalid ports"),
        ('{protocol: icmp, ports: "1"}', 35, "ports do not apply to protocol icmp"),
        ('{protocol: any, ports: "1-9"}', 34, "ports do not apply to protocol any"),
        ("{protocol: tcp, remote: banana}", 35, "not a valid CIDR: 'banana'"),
        ("{protocol: tcp, remote: 10.0.0.1/8}", 35, "host bits are set"),
    ],
)
def test_bad_rules(rule: str, column: int, message: str) -> None:
    line = one(edit('{protocol: tcp, ports: "443", remote: 0.0.0.0/0}', rule))
    assert (
        line.startswith(f"F.yaml:15:{column}: spec.securityGroups[0].rules[0].") and message in line
    )


@pytest.mark.parametrize(
    "rule",
    [
        '{protocol: tcp, ports: "1-65535"}',
        "{protocol: icmp}",
        "{protocol: any, direction: egress, remote: '::/0'}",
        '{protocol: udp, ports: "53", remote: 10.0.0.7}',
    ],
)
def test_good_rules(rule: str) -> None:
    load_text(edit('{protocol: tcp, ports: "443", remote: 0.0.0.0/0}', rule), "F.yaml")


# --- counts and capacity ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("masters", 0, "1..9"),
        ("masters", 10, "1..9"),
        ("workers", -1, "0..1000"),
        ("workers", 1001, "0..1000"),
    ],
)
def test_cluster_counts(field: str, value: int, message: str) -> None:
    lines = problems(
        edit(
            "      workers: 2\n",
            f"      workers: 2\n      {field}: {value}\n".replace(
                "workers: 2\n      workers", "workers"
            ),
        )
    )
    assert any(f"spec.clusters[0].{field}: must be in {message}" in x for x in lines), lines


def _capacity_spec(cidr: str, vms: int, data_path: str = "no-router", lbs: int = 0) -> str:
    lines = [
        "apiVersion: cloudlet/v1",
        "kind: Cloudlet",
        "metadata: {name: small}",
        "spec:",
        f"  dataPath: {data_path}",
        "  lbSubnet: 192.168.0.0/29",
        f"  networks: [{{name: tiny, cidr: {cidr}}}]",
        "  loadBalancers:",
        *[f"    - {{name: lb{i}, network: tiny, redundancy: vip}}" for i in range(lbs)],
        "  vms:",
        *[f"    - {{name: vm{i}, network: tiny}}" for i in range(vms)],
    ]
    return "\n".join(lines).replace("  loadBalancers:\n  vms", "  vms") + "\n"


def test_network_capacity() -> None:
    load_text(_capacity_spec("10.0.0.0/29", 5), "F.yaml")  # 8 - 3 reserved = 5
    line = one(_capacity_spec("10.0.0.0/29", 6))
    assert (
        line == "F.yaml:7:33: spec.networks[0].cidr: network 'tiny' (10.0.0.0/29)"
        " has room for 5 addresses, 6 needed"
    )


def test_capacity_counts_lb_members_per_data_path() -> None:
    # no-router: each of the two LB VMs has an internal leg: 3 + 2 > 5
    assert "6 needed" in one(_capacity_spec("10.0.0.0/29", 4, lbs=1))
    # router: LB VMs have only external legs
    load_text(_capacity_spec("10.0.0.0/29", 5, "router", lbs=1), "F.yaml")
    # floating-ip: members and VIP sit on lbSubnet (5 usable on a /29): 2 LBs need 6
    load_text(_capacity_spec("10.0.0.0/29", 5, "floating-ip", lbs=1), "F.yaml")
    line = one(_capacity_spec("10.0.0.0/29", 5, "floating-ip", lbs=2))
    assert line.startswith(
        "F.yaml:6:13: spec.lbSubnet: lbSubnet (192.168.0.0/29) has room for 5 addresses, 6 needed"
    )


def test_capacity_counts_cluster_nodes_and_vip() -> None:
    text = "\n".join(
        [
            "apiVersion: cloudlet/v1",
            "kind: Cloudlet",
            "metadata: {name: small}",
            "spec:",
            "  networks: [{name: tiny, cidr: 10.0.0.0/29}]",
            "  clusters: [{name: k, network: tiny, masters: 1, workers: 3, vip: true}]",
        ]
    )
    load_text(text, "F.yaml")
    assert "6 needed" in one(text.replace("workers: 3", "workers: 4"))


# --- platform ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("platform", "messages"),
    [
        ("{type: fake, latencyMs: -1}", ["spec.platform.latencyMs: must be >= 0"]),
        ("{type: fake, jitterMs: -5}", ["spec.platform.jitterMs: must be >= 0"]),
        (
            "{type: fake, latencyMs: 9223372036854775807}",
            ["spec.platform.latencyMs: must be at most 600000 (10 minutes)"],
        ),
        (
            "{type: fake, jitterMs: 600001}",
            ["spec.platform.jitterMs: must be at most 600000 (10 minutes)"],
        ),
        ("{type: fake, failureRate: 1.0}", ["spec.platform.failureRate: must be in [0, 1)"]),
        ("{type: fake, failureRate: -0.1}", ["spec.platform.failureRate: must be in [0, 1)"]),
        ("{type: fake, failureRate: .nan}", ["spec.platform.failureRate: must be in [0, 1)"]),
        (
            "{type: fake, cloud: mine}",
            ["spec.platform.cloud: cloud applies to platform type openstack"],
        ),
        (
            "{type: openstack}",
            [
                "spec.platform: platform type openstack requires cloud",
                "spec.platform: platform type openstack requires externalNetwork",
            ],
        ),
        ("{type: openstack, cloud: c, externalNetwork: ''}", ["requires externalNetwork"]),
        (
            "{type: openstack, cloud: c, externalNetwork: public, latencyMs: 3}",
            ["spec.platform.latencyMs: latencyMs applies to platform type fake"],
        ),
        (
            "{type: vsphere, datacenter: dc, cluster: c, datastore: ds, network: n}",
            ["spec.platform: platform type vsphere requires template"],
        ),
        (
            "{type: vsphere, datacenter: dc, cluster: c, datastore: ds, network: n,"
            " template: t, cloud: x}",
            ["cloud applies to platform type openstack"],
        ),
    ],
)
def test_platform(platform: str, messages: list[str]) -> None:
    lines = problems(edit("platform: {type: fake}", f"platform: {platform}"))
    assert len(lines) == len(messages), lines
    for line, message in zip(lines, messages, strict=True):
        assert line.startswith("F.yaml:7:") and message in line


@pytest.mark.parametrize(
    "platform",
    [
        "{type: fake, latencyMs: 50, jitterMs: 10, failureRate: 0.5, seed: -3}",
        "{type: openstack, cloud: edge, externalNetwork: public}",
        "{type: vsphere, datacenter: dc, cluster: c, datastore: ds, network: n, template: t}",
    ],
)
def test_good_platforms(platform: str) -> None:
    load_text(edit("platform: {type: fake}", f"platform: {platform}"), "F.yaml")


# --- documents and collection ------------------------------------------------------------


def test_duplicate_cloudlet_names_across_documents() -> None:
    line = one(BASE + "---\n" + BASE)
    assert line == "F.yaml:36:9: metadata.name: cloudlet 'site-a' is defined twice in this file"


def test_all_semantic_problems_are_reported() -> None:
    text = edit(
        "kind: Cloudlet",
        "kind: Cloudlets",
        "cidr: 10.1.0.0/24",
        "cidr: 10.0.0.0/16",
        "network: backend",
        "network: nowhere",
        "[{port: 8443}]",
        "[{port: 0}]",
    )
    assert len(problems(text)) == 4


def test_validate_without_locations() -> None:
    cloudlet = Cloudlet(
        "cloudlet/v1",
        "Cloudlet",
        Metadata("x"),
        CloudletSpec(
            networks=[Network("n", "10.0.0.0/24")],
            load_balancers=[LoadBalancer("lb", "n", type="dedicated")],
            vms=[
                Vm("a", "n", expose=Expose("lb", [PortSpec(80)])),
                Vm("b", "n", expose=Expose("lb", [PortSpec(80)])),
            ],
        ),
    )
    ((where, message),) = validate(cloudlet)
    assert where is None and message.startswith("spec.vms[1].expose.ports[0].port: tcp/80")
    fixed = attrs.evolve(cloudlet, spec=attrs.evolve(cloudlet.spec, vms=cloudlet.spec.vms[:1]))
    assert validate(fixed) == []
    assert len(validate_documents([fixed, fixed])) == 1


def test_a_security_group_listed_twice_is_reported_at_the_second_mention() -> None:
    from cloudlet.errors import SpecError
    from cloudlet.model.load import load_text

    text = (
        "apiVersion: cloudlet/v1\nkind: Cloudlet\nmetadata: {name: a}\nspec:\n"
        "  networks: [{name: n, cidr: 10.0.0.0/24}]\n  securityGroups: [{name: web}]\n"
        "  vms: [{name: v, network: n, securityGroups: [web, web]}]\n"
    )
    try:
        load_text(text, "d.yaml")
    except SpecError as err:
        assert err.render() == (
            "d.yaml:7:53: spec.vms[0].securityGroups[1]: security group 'web' is listed twice"
        )
    else:
        raise AssertionError("duplicate security group accepted")
