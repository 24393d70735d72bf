"""Security-group rules between the model's text form and Neutron's fields.

The model writes a rule as ``"<direction> <protocol> <ports> <remote>"``
(``ports`` is ``-`` for all, ``N`` or ``N-M``; protocol ``any`` for all).
Neutron's defaults (egress to anything, remote unset) read back as the
text the model writes for them, so a group's observed rules compare
one-to-one with the desired ones.
"""

from __future__ import annotations

from typing import Any


def is_v6(remote: str) -> bool:
    return ":" in remote


def rule_fields(text: str) -> dict[str, Any]:
    """The create arguments for one rule (the group id is the caller's)."""
    direction, protocol, ports, remote = text.split()
    low = high = None
    if ports != "-":
        first, _, last = ports.partition("-")
        low, high = int(first), int(last or first)
    return {
        "direction": direction,
        "remote_ip_prefix": remote,
        "ethertype": "IPv6" if is_v6(remote) else "IPv4",
        "protocol": None if protocol == "any" else protocol,
        "port_range_min": low,
        "port_range_max": high,
    }


def rule_text(rule: Any) -> str:
    """The model's text for a Neutron rule (a dict or an SDK object)."""

    def get(key: str) -> Any:
        return rule.get(key) if isinstance(rule, dict) else getattr(rule, key, None)

    protocol = get("protocol") or "any"
    low, high = get("port_range_min"), get("port_range_max")
    if low is None and high is None:
        ports = "-"
    elif low == high or high is None:
        ports = str(low)
    else:
        ports = f"{low}-{high}"
    remote = get("remote_ip_prefix")
    if remote is None:
        group = get("remote_group_id")
        if group:
            remote = f"group:{group}"
        else:
            remote = "::/0" if get("ethertype") == "IPv6" else "0.0.0.0/0"
    return f"{get('direction')} {protocol} {ports} {remote}"
