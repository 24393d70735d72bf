"""Provider-side address management: vSphere has no IPAM of its own.

Addresses live in the records of the ports, VIPs and floating IPs that hold
them, so the allocator is a pure function of what is recorded: the lowest
host address not in use, skipping the network address, the ``.1`` gateway
and the broadcast address (as the fake cloud and OpenStack do). Callers hold
a lock while they allocate and record, so two threads never pick the same.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from cloudlet.errors import ProviderError

#: Offsets below this are the network address and the gateway.
FIRST_HOST = 2


def gateway(cidr: str) -> str:
    net = ipaddress.ip_network(cidr, strict=False)
    return str(net.network_address + 1)


def prefix_length(cidr: str) -> int:
    return ipaddress.ip_network(cidr, strict=False).prefixlen


def lowest_free(cidr: str, used: Iterable[str], what: str) -> str:
    net = ipaddress.ip_network(cidr, strict=False)
    taken = {ipaddress.ip_address(a) for a in used if a}
    last = net.num_addresses - 2  # the broadcast address is the last one
    for offset in range(FIRST_HOST, last + 1):
        candidate = net.network_address + offset
        if candidate not in taken:
            return str(candidate)
    raise ProviderError(f"{what}: no free address left in {net}", transient=False)
