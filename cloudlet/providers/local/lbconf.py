"""A load balancer VM's configuration on ``local``, from its listener
records, through the LB document (``cloudlet.lb.document``) its agent reads:
haproxy for TCP, nginx stream for UDP (haproxy has none), keepalived for
the VIP of an LB with ``redundancy: vip`` (its instance from ``vips.py``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from cloudlet.lb import LbConfig, Vrrp, document
from cloudlet.providers.local.records import Record


def lb_config(
    lb: Record,
    listeners: Sequence[Record],
    bind: str,
    backends: Mapping[str, str | None],
    run_dir: Path,
    vrrp: Vrrp | None = None,
) -> LbConfig:
    return document.build(
        lb.id, [(r.id, r.attrs) for r in listeners], bind, backends, str(run_dir), vrrp
    )
