"""Security groups on ``local``, with real packets: Neutron's semantics in the
VMs' namespaces (an nftables filter per port, stateful, default drop for a
port that has groups; a port with no group is not filtered).

Traffic goes only to the public addresses ``status`` reports (inside the
platform's 198.18.0.0/15). A refused port is one that gives no answer within
a bounded time: a dropped SYN or datagram, as Neutron drops them."""

from __future__ import annotations

import os
import socket
import textwrap
from pathlib import Path

import pytest
from localsite import (  # noqa: F401 - local_site is the fixture `site`
    _ours_to_reach,
    answers,
    local_site,
    status,
    sync,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

#: How long a refused port is given to answer (it must not).
REFUSED_WITHIN = 2.0


def spec_text(
    name: str,
    *,
    web_ports: tuple[str, ...] = ("443",),
    lb_groups: tuple[str, ...] = ("web",),
    extra_port: str = "1",
    game_groups: tuple[str, ...] = (),
) -> str:
    web = ", ".join(
        f"{{direction: ingress, protocol: tcp, ports: '{p}', remote: 0.0.0.0/0}}" for p in web_ports
    )
    lbs = ", ".join(lb_groups)
    return textwrap.dedent(
        f"""\
        apiVersion: cloudlet/v1
        kind: Cloudlet
        metadata: {{name: {name}}}
        spec:
          platform: {{type: local}}
          dataPath: no-router
          networks: [{{name: internal, cidr: 10.63.0.0/24}}]
          securityGroups:
            - name: web
              rules: [{web}]
            - name: extra
              rules:
                - {{direction: ingress, protocol: tcp, ports: '{extra_port}', remote: 0.0.0.0/0}}
            - name: from-lb
              rules:
                - {{direction: ingress, protocol: tcp, ports: '443', remote: 10.63.0.0/24}}
          loadBalancers:
            - {{name: root, type: shared, network: internal, securityGroups: [{lbs}]}}
          vms:
            - name: game
              network: internal
              securityGroups: [{", ".join(game_groups)}]
              expose:
                loadBalancer: root
                ports: [{{protocol: tcp, port: 443}}, {{protocol: udp, port: 5000}}]
            - name: chat
              network: internal
              expose: {{loadBalancer: root, ports: [{{protocol: tcp, port: 443}}]}}
        """
    )


def refused(mapping: dict[str, object]) -> bool:
    """No answer within ``REFUSED_WITHIN`` (a timeout or a reset)."""
    ip, port = _ours_to_reach(str(mapping["publicIp"])), int(str(mapping["publicPort"]))
    if mapping["protocol"] == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(REFUSED_WITHIN)
            s.sendto(b"hello", (ip, port))
            try:
                s.recv(512)
            except OSError:
                return True
            return False
    try:
        with socket.create_connection((ip, port), timeout=REFUSED_WITHIN) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return not s.recv(512)
    except OSError:
        return True


def mappings_of(site: Path, name: str) -> dict[tuple[str, str, int], dict[str, object]]:
    found = status(site, name)["portMappings"]
    assert isinstance(found, list)
    return {(str(m["target"]), str(m["protocol"]), int(m["port"])): m for m in found}


def test_the_lb_groups_refuse_a_listener_they_do_not_allow_until_a_rule_or_group_opens_it(
    site: Path, tmp_path: Path
) -> None:
    path = tmp_path / "sg.yaml"
    path.write_text(spec_text("sg-lb"))
    sync(site, path)
    m = mappings_of(site, "sg-lb")
    game, chat, udp = m[("game", "tcp", 443)], m[("chat", "tcp", 443)], m[("game", "udp", 5000)]
    remapped = int(str(chat["publicPort"]))
    assert game["publicPort"] == 443 and remapped != 443, m
    assert answers(game) == "vm/game"  # allowed by web
    assert refused(chat), chat  # the second claimant's public port: no rule allows it
    assert refused(udp), udp  # web allows tcp 443 only
    # a rule added to the group opens the port, in place
    path.write_text(spec_text("sg-lb", web_ports=("443", str(remapped))))
    sync(site, path)
    assert answers(chat) == "vm/chat"
    assert answers(game) == "vm/game"
    # the rule gone again, and the LB's ports given a second group that allows it
    path.write_text(spec_text("sg-lb", lb_groups=("extra", "web"), extra_port=str(remapped)))
    sync(site, path)
    assert mappings_of(site, "sg-lb")[("chat", "tcp", 443)]["publicPort"] == remapped
    assert answers(chat) == "vm/chat"
    assert refused(udp), udp


def test_a_back_end_that_allows_only_the_lb_subnet_still_answers_through_the_lb(
    site: Path, tmp_path: Path
) -> None:
    """The back-end's group allows tcp 443 from the LB's subnet: its nat
    redirect sends 443 to the back-end's 7000, and the filter matches the
    port asked for (443), not 7000. UDP 5000, which it does not allow, gets
    no answer through the LB, whose own ports are not filtered here."""
    path = tmp_path / "sg.yaml"
    path.write_text(spec_text("sg-be", lb_groups=(), game_groups=("from-lb",)))
    sync(site, path)
    m = mappings_of(site, "sg-be")
    assert answers(m[("game", "tcp", 443)]) == "vm/game"
    assert answers(m[("chat", "tcp", 443)]) == "vm/chat"  # no group: not filtered
    assert refused(m[("game", "udp", 5000)])
