"""The OpenStack provider's pure parts: marks, rules, error mapping, build waits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from keystoneauth1 import exceptions as ksa
from openstack import exceptions as sdk

from cloudlet.providers.openstack import marks
from cloudlet.providers.openstack.faults import to_provider_error
from cloudlet.providers.openstack.rules import rule_fields, rule_text
from cloudlet.providers.openstack.servers import wait_for

ids = st.from_regex(
    r"(k8s-node|lb|lb-listener)/[a-z][a-z0-9-]{0,20}(\.[a-z0-9-]{1,8}){0,3}", fullmatch=True
)
values = st.one_of(
    st.text(max_size=40),
    st.integers(0, 65535),
    st.lists(st.text(max_size=30), max_size=30).map(tuple),
)


@given(
    ids, st.dictionaries(st.from_regex(r"[a-zA-Z]{1,12}", fullmatch=True), values), st.lists(ids)
)
def test_records_round_trip_through_metadata_chunks(rid, attrs, deps) -> None:  # type: ignore[no-untyped-def]
    items = marks.record_items(rid, attrs, deps)
    assert all(len(v) <= marks.CHUNK and len(k) <= 255 for k, v in items.items())
    assert all("/" not in k for k in items)  # Nova refuses "/" in metadata keys
    noise = {"cloudlet.id": "vm/x", "cloudlet.rec:lb:other:0": "{torn"}
    found = marks.records_in({**noise, **items})
    assert set(found) == {rid}
    got_attrs, got_deps = found[rid]
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in got_attrs.items()} == attrs
    assert got_deps == tuple(sorted(deps))
    assert sorted(marks.record_keys({**noise, **items}, rid)) == sorted(items)


def test_tags_name_owner_id_and_deps() -> None:
    tags = marks.tags_for("edge-1", "port/web", ["subnet/internal", "security-group/web"])
    assert tags[:2] == ["cloudlet.owner=edge-1", "cloudlet.id=port/web"]
    assert marks.parse_tags(reversed(tags)) == (
        "edge-1",
        "port/web",
        ("security-group/web", "subnet/internal"),
    )
    assert marks.parse_tags(["other"]) == (None, None, ())


@pytest.mark.parametrize(
    "text",
    [
        "ingress tcp 443 0.0.0.0/0",
        "ingress udp 5000-5010 10.0.0.0/8",
        "egress any - 0.0.0.0/0",
        "egress any - ::/0",
        "ingress icmp - 192.0.2.0/24",
    ],
)
def test_rules_round_trip(text: str) -> None:
    assert rule_text(rule_fields(text)) == text


def test_neutron_default_egress_reads_as_the_model_writes_it() -> None:
    v4 = {"direction": "egress", "ethertype": "IPv4", "protocol": None, "remote_ip_prefix": None}
    v6 = {**v4, "ethertype": "IPv6"}
    assert (rule_text(v4), rule_text(v6)) == ("egress any - 0.0.0.0/0", "egress any - ::/0")
    group = {**v4, "direction": "ingress", "remote_group_id": "g1"}
    assert rule_text(group) == "ingress any - group:g1"


@pytest.mark.parametrize(
    ("status", "details", "transient"),
    [
        (
            409,
            "Unable to complete operation on network n. One or more ports have an IP allocation",
            True,
        ),
        (409, "Quota exceeded for resources: ['port'].", False),
        (403, "Quota exceeded for instances: Requested 1, but already used 10 of 10", False),
        (400, "Invalid input for cidr", False),
        (500, "Internal Server Error", True),
        (503, "Service Unavailable", True),
    ],
)
def test_http_errors_split_into_transient_and_permanent(
    status: int, details: str, transient: bool
) -> None:
    err = to_provider_error(
        "create port/x", sdk.HttpException("x", http_status=status, details=details)
    )
    assert err.transient is transient
    assert str(err).startswith(f"create port/x: HTTP {status}: ")


def test_connection_failures_are_transient_and_bad_credentials_permanent() -> None:
    assert to_provider_error("observe", ksa.ConnectFailure("refused")).transient
    assert not to_provider_error("observe", ksa.Unauthorized("nope")).transient


def test_build_waits_back_off_and_give_up_transiently() -> None:
    states = iter(["BUILD", "BUILD", "BUILD", "BUILD", "ACTIVE"])
    slept: list[float] = []
    now = [0.0]

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    got = wait_for(
        lambda: next(states), lambda s: s == "ACTIVE", "b", 60, sleep=sleep, clock=lambda: now[0]
    )
    assert got == "ACTIVE"
    assert slept == [0.25, 0.5, 1.0, 2.0]
    with pytest.raises(Exception, match="still not done") as err:
        wait_for(lambda: "BUILD", lambda s: False, "b", 10, sleep=sleep, clock=lambda: now[0])
    assert getattr(err.value, "transient", False)
    assert max(slept) <= 2.0


def test_heat_renders_a_port_with_no_group_unfiltered_as_the_engine_makes_it() -> None:
    from cloudlet.model.expand import Expansion
    from cloudlet.model.resources import Resource
    from cloudlet.providers.openstack.heat import render_heat

    def port(name: str, groups: tuple[str, ...]) -> Resource:
        attrs = {"subnet": "subnet/n", "securityGroups": groups, "allowedAddressPairs": ("vip/v",)}
        return Resource(f"port/{name}", attrs, ("subnet/n", *groups, "vip/v"))

    resources = (
        Resource("subnet/n", {"network": "network/n", "cidr": "10.0.0.0/24"}, ("network/n",)),
        Resource("vip/v", {"subnet": "subnet/n"}, ("subnet/n",)),
        port("open", ()),
        port("web", ("security-group/web",)),
    )
    out = render_heat(Expansion("c", resources, ()))["resources"]
    open_, web = out["port__open"]["properties"], out["port__web"]["properties"]
    assert open_["port_security_enabled"] is False
    assert "security_groups" not in open_ and "allowed_address_pairs" not in open_
    assert "port_security_enabled" not in web
    assert web["security_groups"] == [{"get_resource": "security-group__web"}]
    assert len(web["allowed_address_pairs"]) == 1
