"""Listener records -> haproxy, nginx-stream and keepalived configuration; pure.

One LB runs three daemons, because no single one does all it needs on
Debian 12: haproxy 2.6 proxies TCP but has no UDP ("dgram-type address not
acceptable"), nginx's stream module proxies UDP, keepalived moves the VIP.
Each gets its configuration from the same :class:`LbConfig`, rendered here
and nowhere else, so the ``local`` provider and ``cloudlet lb-agent`` on a
real LB VM cannot drift apart.

Everything is pure: no file is read or written, no binary is looked up. The
inputs are validated when they are built (an address is an address, a port is
a port, a name cannot smuggle a newline or a brace into a configuration), so
a rendering never fails and never needs quoting. The output is deterministic:
listeners, back-ends and peers are sorted, so an unchanged set of records
renders to the same bytes whatever order they came in (the agent reloads
only when the text changed).

How each daemon runs (every one in the foreground, supervised by whoever
started it; no packaged service ever starts on these machines):

- haproxy: :func:`haproxy_argv`, ``haproxy -W -db -S MASTER_SOCK -f CFG``.
  ``-W`` is master-worker mode: a reload is ``SIGUSR2`` to the master (or
  ``reload`` on the master CLI socket), which starts a new worker on the new
  configuration, hands it the listening sockets, and lets the old worker
  finish its established connections (bounded by ``hard-stop-after``), so a
  reload drops nothing. ``-db`` keeps the master in the foreground, so the
  supervisor's child *is* haproxy: it sees its exit and its stderr. (``-db``
  alone would need a second process started with ``-sf`` for every reload,
  which the supervisor would not own.)
- nginx: :func:`nginx_argv`, ``nginx -e stderr -p PREFIX -c CFG -g 'daemon
  off;'``; a reload is ``SIGHUP`` to the master.
- keepalived: :func:`keepalived_argv`, ``keepalived -n -l -D -G -P -f CFG -p
  -r -c`` (pid files under the runtime directory, VRRP subsystem only, logs on
  the console, no syslog); a reload is ``SIGHUP``.

A listener with no back-ends is not rendered: nothing listens on its port (a
client is refused, or gets ICMP port unreachable over UDP) instead of being
accepted and dropped; nginx could not express it anyway (an ``upstream``
needs a server). A configuration with no TCP (or UDP) listener still renders
to a configuration that validates and runs idle; :func:`daemons` says which
daemons have work, and a caller may leave the others stopped.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

import attrs

#: Where Debian 12's libnginx-mod-stream puts the module
#: (/etc/nginx/modules-enabled/50-mod-stream.conf loads ``modules/ngx_stream_module.so``
#: relative to the compiled-in prefix /usr/share/nginx, a link to this directory).
NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"

#: ``sun_path`` holds 108 bytes with its NUL: a longer socket path fails at bind.
_UNIX_PATH_MAX = 107
_LONGEST_SOCKET = "/haproxy-master.sock"

_SAFE_PATH = re.compile(r"/[A-Za-z0-9_.,+=@/-]*")
_IDENT = re.compile(r"[A-Za-z0-9_.-]+")
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")

# How long a UDP session may sit idle between datagrams; with proxy_responses 1
# a request/response session ends at its first answer, this bounds the others.
_UDP_TIMEOUT = "2s"
# haproxy health checks: short, so a dead back-end leaves rotation in about a second.
_CHECKS = "inter 500ms fastinter 200ms downinter 500ms rise 1 fall 2"
_INDENT = "    "
# One JSON line per finished UDP session: OSS nginx has no statistics API, so
# cloudlet.agent.stats adds these lines up. $cloudlet_listener is set per server.
STATS_LOG_FORMAT = "cloudlet_stats"
_STATS_FIELDS = (
    ("listener", "$cloudlet_listener"),
    ("status", "$status"),
    ("bytes_in", "$bytes_received"),
    ("bytes_out", "$bytes_sent"),
    ("upstream", "$upstream_addr"),
    ("upstream_bytes_in", "$upstream_bytes_received"),
    ("session_time", "$session_time"),
)


def section_name(name: str) -> str:
    """The name a listener or back-end has inside the configurations.

    haproxy names take letters, digits, ``-_.:``; an nginx ``proxy_pass`` target
    with a colon reads as host:port. So every other character (a resource id's
    ``/`` included) becomes ``_``: ``vm/game`` is ``vm_game``. The LB agent maps
    haproxy's statistics back to listeners through this same function.
    """
    if not name:
        raise ValueError("a name cannot be empty")
    return _UNSAFE.sub("_", name)


def _address(_inst: Any, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{attribute.name}: {value!r} is not a string")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{attribute.name}: {value!r} is not an IP address") from None
    if "%" in value:
        raise ValueError(f"{attribute.name}: {value!r}: scoped addresses are not supported")


def _port(_inst: Any, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise ValueError(f"{attribute.name}: {value!r} is not a port (1-65535)")


def _matches(pattern: re.Pattern[str], what: str) -> Any:
    def check(_inst: Any, attribute: attrs.Attribute[str], value: str) -> None:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise ValueError(f"{attribute.name}: {value!r} is not {what}")

    return check


def _nonempty(_inst: Any, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{attribute.name}: must be a non-empty string")


def _unique(kind: str, names: list[str]) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ValueError(f"two {kind} share the configuration name {n!r}")
        seen.add(n)


@attrs.frozen
class Backend:
    """One back-end of a listener: a VM's address and the port it serves on."""

    id: str = attrs.field(validator=_nonempty)
    address: str = attrs.field(validator=_address)
    port: int = attrs.field(validator=_port)


@attrs.frozen
class Listener:
    """A public port of the LB: bound on ``bind``:``port``, spread over ``backends``."""

    name: str = attrs.field(validator=_nonempty)
    protocol: Literal["tcp", "udp"] = attrs.field(validator=attrs.validators.in_(("tcp", "udp")))
    bind: str = attrs.field(validator=_address)
    port: int = attrs.field(validator=_port)
    backends: tuple[Backend, ...] = attrs.field(
        validator=attrs.validators.deep_iterable(
            attrs.validators.instance_of(Backend), attrs.validators.instance_of(tuple)
        )
    )

    def __attrs_post_init__(self) -> None:
        _unique(f"back-ends of listener {self.name!r}", [section_name(b.id) for b in self.backends])


@attrs.frozen
class Vrrp:
    """keepalived's share of the LB: one VRRP instance holding ``vip`` among its peers.

    ``peers`` are the other holders' addresses, spoken to by unicast from
    ``source`` (an empty tuple means multicast). ``advert_interval`` is in
    seconds; VRRPv3 counts centiseconds, so 0.1 is fine and 0.001 is not.
    ``state`` is where the instance starts; with every peer ``BACKUP`` the
    highest ``priority`` wins. ``preempt=False`` lets a recovered higher peer
    stay backup instead of taking the VIP back (one move instead of two).
    """

    instance: str = attrs.field(validator=_matches(_IDENT, "a name of [A-Za-z0-9_.-]"))
    interface: str = attrs.field(validator=_matches(_IFNAME, "an interface name"))
    vip: str = attrs.field()
    router_id: int = attrs.field()
    priority: int = attrs.field()
    peers: tuple[str, ...] = attrs.field(validator=attrs.validators.instance_of(tuple))
    source: str = attrs.field(validator=_address)
    advert_interval: float = attrs.field(default=0.1)
    state: Literal["BACKUP", "MASTER"] = attrs.field(
        default="BACKUP", validator=attrs.validators.in_(("BACKUP", "MASTER"))
    )
    preempt: bool = True

    @vip.validator
    def _check_vip(self, _attribute: attrs.Attribute[str], value: str) -> None:
        if not isinstance(value, str) or "/" not in value:
            raise ValueError(f"vip: {value!r} is not address/prefix")
        try:
            ipaddress.ip_interface(value)
        except ValueError:
            raise ValueError(f"vip: {value!r} is not address/prefix") from None

    @router_id.validator
    def _check_router_id(self, _attribute: attrs.Attribute[int], value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 255:
            raise ValueError(f"router_id: {value!r} is not a VRRP router id (1-255)")

    @priority.validator
    def _check_priority(self, _attribute: attrs.Attribute[int], value: int) -> None:
        # 255 belongs to the address owner in VRRP; keepalived only holds the VIP as a backup would
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 254:
            raise ValueError(f"priority: {value!r} is not a VRRP priority (1-254)")

    @advert_interval.validator
    def _check_advert(self, _attribute: attrs.Attribute[float], value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"advert_interval: {value!r} is not a number of seconds")
        centis = round(value * 100)
        if not 1 <= centis <= 4095 or abs(centis - value * 100) > 1e-6:
            raise ValueError(
                f"advert_interval: {value!r} is not a VRRPv3 interval (0.01-40.95 s, in 0.01 s)"
            )

    def __attrs_post_init__(self) -> None:
        version = ipaddress.ip_interface(self.vip).version
        for p in self.peers:
            try:
                ip = ipaddress.ip_address(p)
            except ValueError:
                raise ValueError(f"peers: {p!r} is not an IP address") from None
            if ip.version != version or "%" in p:
                raise ValueError(f"peers: {p!r} is not an IPv{version} address like the VIP")
        if ipaddress.ip_address(self.source).version != version:
            raise ValueError(f"source: {self.source!r} is not an IPv{version} address like the VIP")
        _unique("peers", list(self.peers))
        if self.source in self.peers:
            raise ValueError(f"source {self.source!r} is among its own peers")
        if not self.preempt and self.state != "BACKUP":
            raise ValueError("preempt=False needs state BACKUP (keepalived's nopreempt)")


def _runtime_dir(_inst: Any, _attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not _SAFE_PATH.fullmatch(value):
        raise ValueError(f"runtime_dir: {value!r} is not an absolute path of [A-Za-z0-9_.,+=@/-]")
    if len(value.rstrip("/")) + len(_LONGEST_SOCKET) > _UNIX_PATH_MAX:
        raise ValueError(
            f"runtime_dir: {value!r} is too long for a UNIX socket path "
            f"({_UNIX_PATH_MAX - len(_LONGEST_SOCKET)} characters at most)"
        )


@attrs.frozen
class LbConfig:
    """Everything one LB (one VM or namespace) runs.

    ``runtime_dir`` holds the pid files and sockets of all three daemons
    (see :func:`runtime_paths`), so two LBs sharing a file system (two
    namespaces on one host) need two of them.
    """

    name: str = attrs.field(validator=_nonempty)
    listeners: tuple[Listener, ...] = attrs.field(
        validator=attrs.validators.deep_iterable(
            attrs.validators.instance_of(Listener), attrs.validators.instance_of(tuple)
        )
    )
    vrrp: Vrrp | None = attrs.field(
        validator=attrs.validators.optional(attrs.validators.instance_of(Vrrp))
    )
    runtime_dir: str = attrs.field(validator=_runtime_dir)

    def __attrs_post_init__(self) -> None:
        _unique("listeners", [section_name(li.name) for li in self.listeners])
        seen: set[tuple[str, str, int]] = set()
        for li in self.listeners:
            key = (li.protocol, str(ipaddress.ip_address(li.bind)), li.port)
            if key in seen:
                raise ValueError(f"two {li.protocol} listeners bind {li.bind} port {li.port}")
            seen.add(key)


@attrs.frozen
class RuntimePaths:
    """Where each daemon's configuration, pid files and sockets live for one LB."""

    haproxy_cfg: str
    haproxy_pid: str
    haproxy_socket: str
    haproxy_master_socket: str
    nginx_conf: str
    nginx_pid: str
    nginx_prefix: str
    nginx_stats_log: str
    keepalived_conf: str
    keepalived_pid: str
    vrrp_pid: str
    checkers_pid: str


def runtime_paths(cfg: LbConfig) -> RuntimePaths:
    """The files of ``cfg``'s daemons, all directly under its runtime directory."""
    d = cfg.runtime_dir.rstrip("/")
    return RuntimePaths(
        haproxy_cfg=f"{d}/haproxy.cfg",
        haproxy_pid=f"{d}/haproxy.pid",
        haproxy_socket=f"{d}/haproxy.sock",
        haproxy_master_socket=f"{d}{_LONGEST_SOCKET}",
        nginx_conf=f"{d}/nginx.conf",
        nginx_pid=f"{d}/nginx.pid",
        nginx_prefix=f"{d}/",
        nginx_stats_log=f"{d}/nginx-stats.log",
        keepalived_conf=f"{d}/keepalived.conf",
        keepalived_pid=f"{d}/keepalived.pid",
        vrrp_pid=f"{d}/keepalived-vrrp.pid",
        checkers_pid=f"{d}/keepalived-checkers.pid",
    )


def _live(cfg: LbConfig, protocol: str) -> list[Listener]:
    """The listeners of one protocol that have back-ends, in rendering order."""
    chosen = [li for li in cfg.listeners if li.protocol == protocol and li.backends]
    return sorted(chosen, key=lambda li: section_name(li.name))


def _sorted_backends(li: Listener) -> list[Backend]:
    return sorted(li.backends, key=lambda b: section_name(b.id))


def _hostport(address: str, port: int) -> str:
    """``addr:port``, with an IPv6 address in brackets (both haproxy and nginx read that)."""
    ip = ipaddress.ip_address(address)
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def daemons(cfg: LbConfig) -> tuple[str, ...]:
    """Which daemons have work in ``cfg``: any of ``haproxy``, ``nginx``, ``keepalived``."""
    wanted = []
    if _live(cfg, "tcp"):
        wanted.append("haproxy")
    if _live(cfg, "udp"):
        wanted.append("nginx")
    if cfg.vrrp is not None:
        wanted.append("keepalived")
    return tuple(wanted)


def _header(cfg: LbConfig, daemon: str) -> str:
    lb = section_name(cfg.name)
    return f"# {daemon} for cloudlet LB {lb}: rendered by cloudlet.lb; do not edit."


def haproxy_config(cfg: LbConfig) -> str:
    """haproxy's configuration: one frontend and one backend (same name) per TCP listener.

    Binds the listener's own address, so a VIP needs
    ``net.ipv4.ip_nonlocal_bind=1`` in the namespace on the backup (the
    provider sets it). One thread and a bounded ``maxconn``: an LB namespace
    shares two cores with many others, and haproxy sizes its memory from
    ``maxconn``. The stats socket (``level admin``, ``expose-fd listeners``)
    is what the agent reads statistics from and what a reload passes the
    listening sockets through.
    """
    p = runtime_paths(cfg)
    i = _INDENT
    lines = [
        _header(cfg, "haproxy"),
        "global",
        f"{i}nbthread 1",
        f"{i}maxconn 4096",
        f"{i}pidfile {p.haproxy_pid}",
        f"{i}stats socket {p.haproxy_socket} mode 600 level admin expose-fd listeners",
        f"{i}stats timeout 30s",
        f"{i}hard-stop-after 30s",
        f"{i}log stderr format raw local0 notice",
        "",
        "defaults",
        f"{i}mode tcp",
        f"{i}log global",
        f"{i}option dontlognull",
        f"{i}option redispatch",
        f"{i}retries 2",
        f"{i}timeout connect 2s",
        f"{i}timeout client 1m",
        f"{i}timeout server 1m",
        f"{i}timeout check 1s",
        f"{i}default-server {_CHECKS}",
    ]
    for li in _live(cfg, "tcp"):
        name = section_name(li.name)
        lines += ["", f"frontend {name}", f"{i}bind {_hostport(li.bind, li.port)}"]
        lines += [f"{i}default_backend {name}", "", f"backend {name}", f"{i}balance roundrobin"]
        lines += [
            f"{i}server {section_name(b.id)} {_hostport(b.address, b.port)} check"
            for b in _sorted_backends(li)
        ]
    return "\n".join(lines) + "\n"


def nginx_stream_config(cfg: LbConfig, *, stream_module: str = NGINX_STREAM_MODULE) -> str:
    """A complete nginx.conf proxying each UDP listener, for ``nginx -c FILE -g 'daemon off;'``.

    Only the stream module is used, so there is no http block and so no
    temporary paths; the pid file is under the runtime directory and the
    error log goes to stderr (with ``-e stderr`` on the command line nginx
    never opens /var/log/nginx either). ``proxy_responses 1`` ends a session
    at its first answer, as a request/response protocol wants; passive health
    checks (``max_fails``) take a refusing back-end out of rotation.

    Statistics: each server sets ``$cloudlet_listener`` to its listener's
    section name and logs every finished session as one JSON line (format
    ``cloudlet_stats``) to ``nginx_stats_log`` in the runtime directory, which
    the agent reads incrementally (OSS nginx has no statistics API).
    """
    p = runtime_paths(cfg)
    i = _INDENT
    lines = [
        _header(cfg, "nginx"),
        f"load_module {stream_module};",
        "worker_processes 1;",
        f"pid {p.nginx_pid};",
        "error_log stderr notice;",
        "worker_shutdown_timeout 10s;",
        "",
        "events {",
        f"{i}worker_connections 1024;",
        "}",
        "",
        "stream {",
    ]
    if _live(cfg, "udp"):
        lines.append(_stats_log_format())
    for li in _live(cfg, "udp"):
        name = section_name(li.name)
        lines.append(f"{i}upstream {name} {{")
        lines += [
            f"{i}{i}server {_hostport(b.address, b.port)} max_fails=1 fail_timeout=2s;"
            for b in _sorted_backends(li)
        ]
        lines += [
            f"{i}}}",
            f"{i}server {{",
            f"{i}{i}listen {_hostport(li.bind, li.port)} udp;",
            f"{i}{i}proxy_pass {name};",
            f"{i}{i}proxy_responses 1;",
            f"{i}{i}proxy_timeout {_UDP_TIMEOUT};",
            f"{i}{i}set $cloudlet_listener {name};",
            f"{i}{i}access_log {p.nginx_stats_log} {STATS_LOG_FORMAT};",
            f"{i}}}",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _stats_log_format() -> str:
    fields = ",".join(f'"{k}":"{v}"' for k, v in _STATS_FIELDS)
    return f"{_INDENT}log_format {STATS_LOG_FORMAT} escape=json '{{{fields}}}';"


def _centis(seconds: float) -> str:
    return f"{round(seconds * 100) / 100:g}"


def _vrrp_instance(v: Vrrp) -> list[str]:
    i = _INDENT
    lines = [
        f"vrrp_instance {v.instance} {{",
        f"{i}state {v.state}",
        f"{i}interface {v.interface}",
        f"{i}virtual_router_id {v.router_id}",
        f"{i}priority {v.priority}",
        f"{i}advert_int {_centis(v.advert_interval)}",
    ]
    if not v.preempt:
        lines.append(f"{i}nopreempt")
    if v.peers:
        # one peer per line: `unicast_peer { a b }` keeps only the first and splits the brain
        peers = sorted(v.peers, key=lambda a: int(ipaddress.ip_address(a)))
        lines += [f"{i}unicast_src_ip {v.source}", f"{i}unicast_peer {{"]
        lines += [f"{i}{i}{ipaddress.ip_address(a)}" for a in peers]
        lines.append(f"{i}}}")
    else:
        lines.append(f"{i}mcast_src_ip {v.source}")
    lines += [
        f"{i}virtual_ipaddress {{",
        f"{i}{i}{ipaddress.ip_interface(v.vip)} dev {v.interface}",
        f"{i}}}",
        "}",
    ]
    return lines


def keepalived_config(cfg: LbConfig) -> str:
    """keepalived's configuration: the LB's VRRP instance, if it has one.

    VRRPv3, so the advertisement interval can be a fraction of a second
    (0.1 s measured a 0.25-0.68 s failover). No ``vrrp_strict``: it would add
    firewall rules of keepalived's own. Without ``cfg.vrrp`` the text holds
    only global_defs: it validates, and keepalived has nothing to do.
    """
    i = _INDENT
    lines = [
        _header(cfg, "keepalived"),
        "global_defs {",
        f"{i}router_id {section_name(cfg.name)}",
        f"{i}vrrp_version 3",
        "}",
    ]
    if cfg.vrrp is not None:
        lines += ["", *_vrrp_instance(cfg.vrrp)]
    return "\n".join(lines) + "\n"


def haproxy_argv(cfg: LbConfig, config: str | None = None) -> tuple[str, ...]:
    """Run haproxy in the foreground, master-worker (see the module's docstring)."""
    p = runtime_paths(cfg)
    return ("haproxy", "-W", "-db", "-S", p.haproxy_master_socket, "-f", config or p.haproxy_cfg)


def haproxy_check_argv(config: str) -> tuple[str, ...]:
    """Validate a rendered haproxy configuration (exit 0 when valid)."""
    return ("haproxy", "-c", "-q", "-f", config)


def nginx_argv(cfg: LbConfig, config: str | None = None) -> tuple[str, ...]:
    """Run nginx in the foreground on the stream configuration."""
    p = runtime_paths(cfg)
    conf = config or p.nginx_conf
    return ("nginx", "-e", "stderr", "-p", p.nginx_prefix, "-c", conf, "-g", "daemon off;")


def nginx_check_argv(cfg: LbConfig, config: str | None = None) -> tuple[str, ...]:
    """Validate a rendered nginx configuration (exit 0 when valid).

    ``nginx -t`` binds its listen addresses, so run it inside the LB's namespace
    (with ``ip_nonlocal_bind=1`` for a VIP it does not hold). It works while
    nginx runs there (the UDP sockets take ``SO_REUSEADDR``) and leaves the
    running pid file as it is.
    """
    p = runtime_paths(cfg)
    return ("nginx", "-e", "stderr", "-p", p.nginx_prefix, "-t", "-q", "-c", config or p.nginx_conf)


def keepalived_argv(cfg: LbConfig, config: str | None = None) -> tuple[str, ...]:
    """Run keepalived in the foreground, VRRP only, logging to the console, pid files of its own."""
    p = runtime_paths(cfg)
    return (
        "keepalived",
        "-n",
        "-l",
        "-D",
        "-G",
        "-P",
        "-f",
        config or p.keepalived_conf,
        "-p",
        p.keepalived_pid,
        "-r",
        p.vrrp_pid,
        "-c",
        p.checkers_pid,
    )


def keepalived_check_argv(config: str) -> tuple[str, ...]:
    """Validate a rendered keepalived configuration (exit 0 when valid).

    ``-e``: without it a missing file is reported and still exits 0.
    """
    return ("keepalived", "-t", "-e", "-f", config)
