"""The LB agent's pure decisions: what to start, reload and stop once a new
document's configurations are in place, and how each daemon is checked and
run. Functions of their inputs only, so the unit tests need no host."""

from __future__ import annotations

from collections.abc import Collection

import attrs

from cloudlet.agent.daemons import START_ORDER, STOP_ORDER
from cloudlet.lb import (
    LbConfig,
    daemons,
    haproxy_argv,
    haproxy_check_argv,
    haproxy_config,
    keepalived_argv,
    keepalived_check_argv,
    keepalived_config,
    nginx_argv,
    nginx_check_argv,
    nginx_stream_config,
    runtime_paths,
)


@attrs.frozen
class Actions:
    start: tuple[str, ...] = ()
    reload: tuple[str, ...] = ()
    stop: tuple[str, ...] = ()


def actions(
    wanted: Collection[str],
    managed: Collection[str],
    alive: Collection[str],
    changed: Collection[str],
) -> Actions:
    """What to do once a new document's configurations are in place.

    ``wanted``: the daemons with work; ``managed``: those the agent
    supervises (running or waiting to restart); ``alive``: those running
    now; ``changed``: those whose configuration file changed. A daemon down
    and waiting for its restart is started now, on the new configuration."""
    return Actions(
        start=tuple(d for d in START_ORDER if d in wanted and d not in alive),
        reload=tuple(d for d in START_ORDER if d in wanted and d in alive and d in changed),
        stop=tuple(d for d in STOP_ORDER if d in managed and d not in wanted),
    )


def configs(cfg: LbConfig) -> dict[str, str]:
    """Each daemon with work, and its rendered configuration."""
    render = {"haproxy": haproxy_config, "nginx": nginx_stream_config}
    render["keepalived"] = keepalived_config
    return {d: render[d](cfg) for d in daemons(cfg)}


def config_path(cfg: LbConfig, daemon: str) -> str:
    p = runtime_paths(cfg)
    return {"haproxy": p.haproxy_cfg, "nginx": p.nginx_conf, "keepalived": p.keepalived_conf}[
        daemon
    ]


def check_argv(cfg: LbConfig, daemon: str, config: str) -> tuple[str, ...]:
    if daemon == "haproxy":
        return haproxy_check_argv(config)
    if daemon == "nginx":
        return nginx_check_argv(cfg, config)
    return keepalived_check_argv(config)


def run_argv(cfg: LbConfig, daemon: str) -> tuple[str, ...]:
    run = {"haproxy": haproxy_argv, "nginx": nginx_argv, "keepalived": keepalived_argv}
    return run[daemon](cfg)


def unbound(cfg: LbConfig, bound: Collection[tuple[str, int]]) -> list[tuple[str, int]]:
    """The (protocol, port) of every rendered listener not yet in ``bound``."""
    want = {(li.protocol, li.port) for li in cfg.listeners if li.backends}
    return sorted(want - set(bound))
