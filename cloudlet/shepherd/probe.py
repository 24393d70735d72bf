"""Shepherd on the data plane: does every port mapping answer?

Only where the public addresses are reachable from this host (the ``local``
platform, whose external range routes to its own namespaces): there a probe
is a TCP connection that must get an answer to ``GET /`` and a UDP datagram
that must get one back, with a short timeout. The result becomes the
``Reachable`` condition of the status.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence

import attrs

from cloudlet.shepherd.status import Condition, PortMappingStatus, Status

TIMEOUT_S = 2.0
#: How long a silent mapping is tried again before it counts as unreachable.
SETTLE_S = 5.0


def answers(mapping: PortMappingStatus, timeout: float = TIMEOUT_S) -> bool:
    if mapping.public_ip is None:
        return False
    where = (mapping.public_ip, mapping.public_port)
    try:
        if mapping.protocol == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(timeout)
                s.sendto(b"cloudlet-probe\n", where)
                return bool(s.recv(512))
        with socket.create_connection(where, timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return bool(s.recv(512))
    except OSError:
        return False


def silent_mappings(
    mappings: Sequence[PortMappingStatus], settle: float = SETTLE_S
) -> list[PortMappingStatus]:
    """The mappings that give no answer, each tried again for up to ``settle``
    seconds (an LB just (re)started marks its servers up after a check)."""
    deadline = time.monotonic() + settle
    silent = [m for m in mappings if not answers(m)]
    while silent and time.monotonic() < deadline:
        time.sleep(0.2)
        silent = [m for m in silent if not answers(m)]
    return silent


def with_reachability(status: Status, at: float) -> Status:
    """``status`` with a ``Reachable`` condition from probing every mapping now."""
    silent = silent_mappings(status.port_mappings)
    message = ", ".join(f"{m.protocol}/{m.public_port} ({m.target})" for m in silent)
    fresh = Condition(
        "Reachable",
        "False" if silent else "True",
        "NoAnswer" if silent else "Answered",
        f"no answer from {message}" if silent else "",
        at,
    )
    old = status.condition("Reachable")
    if old is not None and old.status == fresh.status:
        fresh = attrs.evolve(fresh, last_transition_time=old.last_transition_time)
    kept = tuple(c for c in status.conditions if c.type != "Reachable")
    return attrs.evolve(status, conditions=(*kept, fresh))


def probed(status: Status, previous: Status | None, at: float) -> Status:
    """Carry the previous ``Reachable`` into a fresh status, then probe."""
    old = previous.condition("Reachable") if previous is not None else None
    if old is not None:
        status = attrs.evolve(status, conditions=(*status.conditions, old))
    return with_reachability(status, at)
