"""The ``local`` platform's security-group rendering (pure): model rules to
nftables, the per-port filter, and which ports a VM's records filter."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudlet.model.expand import DEFAULT_EGRESS, group_rules, rule_text
from cloudlet.model.spec import Rule
from cloudlet.providers.local.records import Record
from cloudlet.providers.local.security import (
    PortFilter,
    filter_table,
    port_filters,
    rule_match,
    ruleset,
)
from cloudlet.providers.local.site import Site
from cloudlet.providers.local.vms import redirect_ruleset


@pytest.mark.parametrize(
    ("text", "direction", "match"),
    [
        ("ingress tcp 443 0.0.0.0/0", "ingress", "meta nfproto ipv4 tcp dport 443"),
        ("ingress tcp 8000-8100 10.0.0.0/8", "ingress", "ip saddr 10.0.0.0/8 tcp dport 8000-8100"),
        ("ingress udp - 10.1.2.0/24", "ingress", "ip saddr 10.1.2.0/24 meta l4proto udp"),
        ("ingress icmp - 0.0.0.0/0", "ingress", "meta nfproto ipv4 meta l4proto icmp"),
        ("ingress icmp - fd00::/8", "ingress", "ip6 saddr fd00::/8 meta l4proto ipv6-icmp"),
        ("egress tcp 53 192.0.2.0/24", "egress", "ip daddr 192.0.2.0/24 tcp dport 53"),
        ("egress any - 0.0.0.0/0", "egress", "meta nfproto ipv4"),
        ("egress any - ::/0", "egress", "meta nfproto ipv6"),
    ],
)
def test_a_rule_becomes_the_match_of_its_direction_family_protocol_and_ports(
    text: str, direction: str, match: str
) -> None:
    assert rule_match(text) == (direction, match)


@pytest.mark.parametrize(
    "text", ["ingress icmp 80 0.0.0.0/0", "ingress sctp - 0.0.0.0/0", "sideways tcp - 0.0.0.0/0"]
)
def test_a_rule_outside_the_model_grammar_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        rule_match(text)


def test_every_rule_the_model_writes_renders() -> None:
    rules = [
        Rule(),
        Rule(protocol="udp", ports="5000-5010", remote="10.0.0.0/8"),
        Rule(direction="egress", protocol="icmp", remote="::/0"),
        Rule(protocol="any", remote="2001:db8::/32"),
    ]
    for text in (*map(rule_text, rules), *DEFAULT_EGRESS, *group_rules([])):
        rule_match(text)


def test_a_filtered_port_is_stateful_and_drops_what_no_rule_allows() -> None:
    table = filter_table([PortFilter("eth1", ("ingress tcp 443 0.0.0.0/0",))])
    chain = table.split("chain in_eth1 {\n")[1].split("\n  }")[0].splitlines()
    assert [line.strip() for line in chain] == [
        "ct state established,related accept",
        "ct state invalid drop",
        "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert, "
        "mld-listener-query } accept",
        "meta nfproto ipv4 tcp dport 443 accept",
        "drop",
    ]
    out = table.split("chain out_eth1 {\n")[1].split("\n  }")[0].splitlines()
    assert [line.strip() for line in out][-2:] == [  # no egress rule: only ND goes out
        "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, "
        "mld-listener-report } accept",
        "drop",
    ]
    assert 'iifname "eth1" jump in_eth1' in table and 'oifname "eth1" jump out_eth1' in table
    assert "eth0" not in table


def test_ingress_is_filtered_before_the_back_ends_redirect() -> None:
    """prerouting at mangle (-150) comes before the nat redirect (dstnat,
    -100): a rule for 443 sees 443, not the back-end's 7000."""
    text = ruleset(redirect_ruleset(), [PortFilter("eth0", ("ingress tcp 443 0.0.0.0/0",))])
    assert text.count("flush ruleset") == 1 and text.startswith("flush ruleset\n")
    assert "type nat hook prerouting priority dstnat" in text
    assert "type filter hook prerouting priority mangle; policy accept;" in text
    assert "type filter hook output priority filter; policy accept;" in text


def test_no_filtered_port_means_no_filter_table() -> None:
    assert filter_table([]) == ""
    assert ruleset("", []) == "flush ruleset\n"  # an LB VM with no group: nothing loaded


def _put(site: Site, uid: str, rid: str, **attrs: object) -> Record:
    record = Record(uid, rid, rid.split("/")[0], dict(attrs), [])  # type: ignore[arg-type]
    site.records.put(record)
    return record


def test_only_ports_with_groups_are_filtered_with_the_union_of_their_rules(
    tmp_path: Path,
) -> None:
    site = Site(tmp_path, "sg")
    _put(site, "g1", "security-group/web", rules=("ingress tcp 443 0.0.0.0/0",))
    _put(site, "g2", "security-group/ssh", rules=("ingress tcp 22 10.0.0.0/8",))
    _put(site, "p0", "port/lb.0.ext", securityGroups=("security-group/web", "security-group/ssh"))
    _put(site, "p1", "port/lb.0.int", securityGroups=())
    _put(site, "p2", "port/lb.0.x", securityGroups=("security-group/gone",))
    vm = _put(site, "v0", "vm/lb.0", ports=("port/lb.0.ext", "port/lb.0.int", "port/lb.0.x"))
    assert port_filters(site, vm) == [
        PortFilter("eth0", ("ingress tcp 22 10.0.0.0/8", "ingress tcp 443 0.0.0.0/0")),
        PortFilter("eth2", ()),  # a group the records lack: filtered, nothing allowed
    ]
