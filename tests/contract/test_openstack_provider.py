"""The OpenStack provider on a real OpenStack control plane: the contract, then its own rules.

The cloud is the project's test cloud (``tests/integration/openstack/cloud.sh``:
keystone, glance, placement, nova with the fake virt driver, neutron ML2),
started once if it is not up. Every test works under fresh owners, as on a
shared real cloud, and the contract's cleanup deletes what each test made.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from osconsole import PLATFORM, Console, cloud_config, eventually
from provider_contract import (
    Capabilities,
    ProviderHarness,
    mutated,
    provider_contract_tests,
    sample_resources,
)

from cloudlet.errors import ProviderError
from cloudlet.model.resources import Observed, Resource
from cloudlet.providers.openstack.provider import OpenstackProvider
from cloudlet.providers.openstack.snapshot import DROPS_ALL

CAPS = Capabilities(image="ubuntu-22.04", flavor="m1.small", other_flavor="m1.medium")
SAMPLE = {r.id: r for r in sample_resources(CAPS)}


@pytest.fixture(scope="module", autouse=True)
def cloud() -> None:
    cloud_config()


class OpenstackHarness(ProviderHarness):
    def __init__(self) -> None:
        self.console: Console
        super().__init__(lambda: OpenstackProvider(PLATFORM), Console())


TestOpenstackContract = provider_contract_tests(OpenstackHarness, caps=CAPS)


@pytest.fixture
def harness() -> Iterator[OpenstackHarness]:
    h = OpenstackHarness()
    owners: list[str] = []
    h.owners = owners  # type: ignore[attr-defined]
    yield h
    for owner in owners:
        h.console.purge(owner)
    h.close()


def make(h: OpenstackHarness, owner: str, *ids: str) -> dict[str, Observed]:
    h.owners.append(owner)  # type: ignore[attr-defined]
    return {rid: h.provider.create(owner, SAMPLE[rid]) for rid in SAMPLE if rid in ids}


VM = ("network/n", "subnet/n", "port/game", "vm/game")


def test_objects_carry_owner_and_id_tags_and_names(harness: OpenstackHarness) -> None:
    made = make(harness, "os-tags", "network/n", "subnet/n", "security-group/web", *VM)
    con = harness.console
    port = con.port("os-tags", "port/game")
    assert port.name == "os-tags:port/game"
    assert set(port.tags) == {
        "cloudlet.owner=os-tags",
        "cloudlet.id=port/game",
        "cloudlet.dep=subnet/n",
    }
    server = con.server("os-tags", "vm/game")
    assert server.id == made["vm/game"].uid
    assert server.tags == ["cloudlet.owner=os-tags"]
    assert server.metadata["cloudlet.id"] == "vm/game"
    assert server.name == "os-tags.game"
    assert [p.id for p in con.conn.network.ports(device_id=server.id)] == [port.id]


def test_a_port_left_untagged_by_a_crash_is_adopted_not_duplicated(
    harness: OpenstackHarness,
) -> None:
    """Zed's Neutron tags after create: a kill between the two leaves a named, untagged port."""
    made = make(harness, "os-untagged", "network/n", "subnet/n")
    con = harness.console
    orphan = con.conn.network.create_port(
        network_id=made["network/n"].uid,
        name="os-untagged:port/game",
        fixed_ips=[{"subnet_id": made["subnet/n"].uid}],
    )
    assert [o.id for o in harness.provider.observe("os-untagged")].count(None) == 0
    port = harness.provider.create("os-untagged", SAMPLE["port/game"])
    assert port.uid == orphan.id
    assert con.counts("os-untagged")["port"] == 1


def test_out_of_band_rule_and_pair_changes_are_observed_and_healed(
    harness: OpenstackHarness,
) -> None:
    ids = ("network/n", "subnet/n", "security-group/web", "vip/lb", "port/lb.0.int")
    made = make(harness, "os-drift", *ids)
    con = harness.console
    con.delete_rule(made["security-group/web"].uid, "ingress tcp 443")
    con.set_pairs(made["port/lb.0.int"].uid, ["10.213.0.250"])
    seen = {o.id: o for o in harness.provider.observe("os-drift")}
    assert seen["security-group/web"].attrs["rules"] == ()
    assert seen["port/lb.0.int"].attrs["allowedAddressPairs"] == ("10.213.0.250",)
    for rid in ("security-group/web", "port/lb.0.int"):
        harness.provider.update("os-drift", SAMPLE[rid], seen[rid])
    again = {o.id: o for o in harness.provider.observe("os-drift")}
    assert again["security-group/web"].attrs["rules"] == ("ingress tcp 443 0.0.0.0/0",)
    assert again["port/lb.0.int"].attrs["allowedAddressPairs"] == ("vip/lb",)
    vip = con.port("os-drift", "vip/lb").fixed_ips[0]["ip_address"]
    pairs = con.port("os-drift", "port/lb.0.int").allowed_address_pairs
    assert [p["ip_address"] for p in pairs] == [vip]


def test_a_port_with_no_group_is_unfiltered_and_port_security_follows_its_groups(
    harness: OpenstackHarness,
) -> None:
    """No group means no filtering (as on ``local``): port security off. An
    empty group list with port security on would drop all of its traffic."""
    made = make(harness, "os-nogroup", "network/n", "subnet/n", "security-group/web", "port/game")
    con = harness.console
    port = con.port("os-nogroup", "port/game")
    assert (port.is_port_security_enabled, port.security_group_ids) == (False, [])
    grouped = mutated(SAMPLE["port/game"], CAPS)  # the group web added
    after = harness.provider.update("os-nogroup", grouped, made["port/game"])
    assert after.attrs["securityGroups"] == ("security-group/web",)
    port = con.port("os-nogroup", "port/game")
    web = made["security-group/web"].uid
    assert (port.is_port_security_enabled, port.security_group_ids) == (True, [web])
    after = harness.provider.update("os-nogroup", SAMPLE["port/game"], after)
    assert after.attrs["securityGroups"] == ()
    port = con.port("os-nogroup", "port/game")
    assert (port.is_port_security_enabled, port.security_group_ids) == (False, [])


def test_port_security_turned_on_out_of_band_is_drift_and_healed(
    harness: OpenstackHarness,
) -> None:
    made = make(harness, "os-psec", "network/n", "subnet/n", "port/game")
    con = harness.console
    con.conn.network.update_port(made["port/game"].uid, port_security_enabled=True)
    seen = {o.id: o for o in harness.provider.observe("os-psec")}
    assert seen["port/game"].attrs["securityGroups"] == (DROPS_ALL,)
    harness.provider.update("os-psec", SAMPLE["port/game"], seen["port/game"])
    assert con.port("os-psec", "port/game").is_port_security_enabled is False
    again = {o.id: o for o in harness.provider.observe("os-psec")}
    assert again["port/game"].attrs["securityGroups"] == ()


def test_a_port_with_no_group_needs_no_address_pairs_and_reads_its_vips(
    harness: OpenstackHarness,
) -> None:
    """Neutron refuses address pairs with port security off, and lets every
    address through then: the VIP the port was asked to carry reads back."""
    made = make(harness, "os-nopairs", "network/n", "subnet/n", "vip/lb")
    shared = Resource(
        "port/apps.master.0",
        {"subnet": "subnet/n", "securityGroups": (), "allowedAddressPairs": ("vip/lb",)},
        ["subnet/n", "vip/lb"],
    )
    port = harness.provider.create("os-nopairs", shared)
    assert port.attrs["allowedAddressPairs"] == ("vip/lb",)
    assert port.attrs["securityGroups"] == ()
    raw = harness.console.port("os-nopairs", "port/apps.master.0")
    assert (raw.is_port_security_enabled, raw.allowed_address_pairs) == (False, [])
    assert made["vip/lb"].uid != raw.id


def test_a_rule_change_is_a_rule_diff_not_a_new_group(harness: OpenstackHarness) -> None:
    made = make(harness, "os-rules", "security-group/web")
    group = harness.console.group("os-rules", "security-group/web")
    kept = {r["id"] for r in group.security_group_rules}
    wider = Resource(
        "security-group/web",
        {"rules": ("ingress tcp 443 0.0.0.0/0", "ingress udp 5000-5010 10.0.0.0/8")},
    )
    after = harness.provider.update("os-rules", wider, made["security-group/web"])
    assert after.uid == made["security-group/web"].uid
    rules = harness.console.group("os-rules", "security-group/web").security_group_rules
    assert kept < {r["id"] for r in rules}
    assert sorted((r["protocol"], r["port_range_min"], r["port_range_max"]) for r in rules) == [
        ("tcp", 443, 443),
        ("udp", 5000, 5010),
    ]


def test_a_flavor_change_resizes_the_same_server(harness: OpenstackHarness) -> None:
    made = make(harness, "os-resize", *VM)
    vm = SAMPLE["vm/game"]
    bigger = Resource(vm.id, {**vm.attrs, "flavor": "m1.medium"}, vm.deps)
    after = harness.provider.update("os-resize", bigger, made["vm/game"])
    assert after.uid == made["vm/game"].uid
    server = harness.console.server("os-resize", "vm/game")
    assert (server.status, server.flavor.original_name) == ("ACTIVE", "m1.medium")


def test_a_deleted_server_takes_its_records_with_it(harness: OpenstackHarness) -> None:
    ids = ("network/n", "subnet/n", "port/apps.master.0", "vm/apps.master.0")
    made = make(harness, "os-records", *ids, "k8s-node/apps.master.0")
    node = made["k8s-node/apps.master.0"]
    assert node.uid == f"{made['vm/apps.master.0'].uid}/k8s-node/apps.master.0"
    harness.console.remove("os-records", made["vm/apps.master.0"].uid)
    # Nova deletes asynchronously: wait (bounded) for what is asserted
    gone = {"vm/apps.master.0", "k8s-node/apps.master.0"}
    seen = eventually(
        lambda: {o.id for o in harness.provider.observe("os-records")}, lambda ids: not ids & gone
    )
    assert "vm/apps.master.0" not in seen and "k8s-node/apps.master.0" not in seen
    port = eventually(
        lambda: harness.console.port("os-records", "port/apps.master.0"),
        lambda p: p.device_id == "",
    )
    assert port.device_id == ""


def test_unknown_flavor_and_image_are_permanent_and_name_what_exists(
    harness: OpenstackHarness,
) -> None:
    make(harness, "os-names", "network/n", "subnet/n", "port/game")
    vm = SAMPLE["vm/game"]
    for key, value in (("flavor", "m9.huge"), ("image", "no-such-image")):
        odd = Resource(vm.id, {**vm.attrs, key: value}, vm.deps)
        with pytest.raises(ProviderError, match=f"unknown {key} '{value}'.*m1.small|ubuntu") as err:
            harness.provider.create("os-names", odd)
        assert not err.value.transient
    assert harness.console.server("os-names", "vm/game") is None


def test_a_network_in_use_is_a_transient_conflict(harness: OpenstackHarness) -> None:
    made = make(harness, "os-busy", "network/n", "subnet/n", "port/game")
    with pytest.raises(ProviderError, match="HTTP 409") as err:
        harness.provider.delete("os-busy", made["network/n"])
    assert err.value.transient


def test_wrong_credentials_are_permanent_and_never_printed(tmp_path: object) -> None:
    import os
    from pathlib import Path

    import yaml

    real = yaml.safe_load(Path(os.environ["OS_CLIENT_CONFIG_FILE"]).read_text())
    bad = real["clouds"]["osci-demo"]
    bad["auth"]["password"] = "Not-The-Password-42"
    path = Path(str(tmp_path)) / "clouds.yaml"
    path.write_text(yaml.safe_dump({"clouds": {"osci-bad": bad}}))
    old = os.environ["OS_CLIENT_CONFIG_FILE"]
    os.environ["OS_CLIENT_CONFIG_FILE"] = str(path)
    try:
        import attrs

        provider = OpenstackProvider(attrs.evolve(PLATFORM, cloud="osci-bad"))
        with pytest.raises(ProviderError) as err:
            provider.observe("anyone")
        assert not err.value.transient
        assert "Not-The-Password-42" not in str(err.value)
        missing = OpenstackProvider(attrs.evolve(PLATFORM, cloud="no-such-cloud"))
        with pytest.raises(ProviderError, match="no-such-cloud") as err2:
            missing.observe("anyone")
        assert not err2.value.transient
    finally:
        os.environ["OS_CLIENT_CONFIG_FILE"] = old


def test_a_build_ending_in_error_is_deleted_and_reported_transient(
    harness: OpenstackHarness,
) -> None:
    """No host has the flavor's disk (the fake driver offers 600,000 GB):
    nova puts the server in ERROR; the provider deletes it and says "try
    again", leaving nothing behind."""
    import openstack

    admin = openstack.connect(cloud="osci-admin")
    if admin.compute.find_flavor("ct.no-host") is None:
        admin.compute.create_flavor(
            name="ct.no-host", ram=512, vcpus=1, disk=10_000_000, is_public=True
        )
    admin.close()
    make(harness, "os-error", "network/n", "subnet/n", "port/game")
    vm = SAMPLE["vm/game"]
    huge = Resource(vm.id, {**vm.attrs, "flavor": "ct.no-host"}, vm.deps)
    with pytest.raises(ProviderError, match="build failed") as err:
        harness.provider.create("os-error", huge)
    assert err.value.transient
    assert harness.console.server("os-error", "vm/game") is None
    assert harness.console.port("os-error", "port/game").device_id == ""
