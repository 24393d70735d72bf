"""A load balancer VM's daemons on ``local``: haproxy for TCP listeners,
nginx stream for UDP ones (haproxy has no UDP), from the listener records."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from cloudlet.model.kinds import refs
from cloudlet.providers.local.records import Record


def lb_daemons(
    lb: Record,
    listeners: Sequence[Record],
    bind: str,
    backends: Mapping[str, str | None],
    run_dir: Path,
) -> dict[str, list[str]]:
    """Write the configurations under ``run_dir``; return each daemon's argv."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tcp = [r for r in listeners if r.attrs.get("protocol") == "tcp"]
    udp = [r for r in listeners if r.attrs.get("protocol") == "udp"]
    daemons: dict[str, list[str]] = {}
    if tcp:
        cfg = run_dir / "haproxy.cfg"
        cfg.write_text(_haproxy(tcp, bind, backends))
        daemons["haproxy"] = ["haproxy", "-db", "-f", str(cfg)]
    if udp:
        cfg = run_dir / "nginx.conf"
        cfg.write_text(_nginx(udp, bind, backends, run_dir))
        daemons["nginx"] = ["nginx", "-c", str(cfg), "-g", "daemon off;"]
    return daemons


def _servers(listener: Record, backends: Mapping[str, str | None]) -> list[tuple[str, str]]:
    port = listener.attrs["port"]
    return [
        (target, f"{backends[target]}:{port}")
        for target in refs(listener.attrs, "targets")
        if backends.get(target)
    ]


def _haproxy(listeners: Sequence[Record], bind: str, backends: Mapping[str, str | None]) -> str:
    lines = [
        "global",
        "  maxconn 4096",
        "defaults",
        "  mode tcp",
        "  timeout connect 2s",
        "  timeout client 30s",
        "  timeout server 30s",
    ]
    for i, listener in enumerate(sorted(listeners, key=lambda r: r.id)):
        lines += [f"listen l{i}", f"  bind {bind}:{listener.attrs['publicPort']}"]
        for j, (_, addr) in enumerate(_servers(listener, backends)):
            lines.append(f"  server s{j} {addr} check inter 500ms fall 2 rise 1")
    return "\n".join(lines) + "\n"


def _nginx(
    listeners: Sequence[Record], bind: str, backends: Mapping[str, str | None], run_dir: Path
) -> str:
    lines = [
        "load_module /usr/lib/nginx/modules/ngx_stream_module.so;",
        f"pid {run_dir}/nginx.pid;",
        "error_log stderr;",
        "events { worker_connections 1024; }",
        "stream {",
    ]
    for i, listener in enumerate(sorted(listeners, key=lambda r: r.id)):
        servers = " ".join(f"server {addr};" for _, addr in _servers(listener, backends))
        lines += [
            f"  upstream u{i} {{ {servers} }}",
            f"  server {{ listen {bind}:{listener.attrs['publicPort']} udp;"
            f" proxy_pass u{i}; proxy_responses 1; proxy_timeout 2s; }}",
        ]
    return "\n".join([*lines, "}"]) + "\n"
