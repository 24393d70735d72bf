"""A load balancer VM's daemons on ``local``, from its listener records:
haproxy for TCP, nginx stream for UDP (haproxy has none), keepalived for
the VIP of an LB with ``redundancy: vip`` (its instance from ``vips.py``),
rendered by the pure ``cloudlet.lb`` functions a real LB VM's agent uses too."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from cloudlet.lb import (
    LbConfig,
    Vrrp,
    daemons,
    document,
    haproxy_argv,
    haproxy_config,
    keepalived_argv,
    keepalived_config,
    nginx_argv,
    nginx_stream_config,
    runtime_paths,
)
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


def lb_daemons(cfg: LbConfig) -> dict[str, list[str]]:
    """Write the configurations under the config's runtime dir; return the
    argv of each daemon that has work."""
    Path(cfg.runtime_dir).mkdir(parents=True, exist_ok=True)
    paths = runtime_paths(cfg)
    wanted = daemons(cfg)
    out: dict[str, list[str]] = {}
    if "haproxy" in wanted:
        Path(paths.haproxy_cfg).write_text(haproxy_config(cfg))
        out["haproxy"] = list(haproxy_argv(cfg))
    if "nginx" in wanted:
        Path(paths.nginx_conf).write_text(nginx_stream_config(cfg))
        out["nginx"] = list(nginx_argv(cfg))
    if "keepalived" in wanted:
        Path(paths.keepalived_conf).write_text(keepalived_config(cfg))
        out["keepalived"] = list(keepalived_argv(cfg))
    return out
