"""The LB's configuration renderers: shape, determinism, and the pitfalls measured on real daemons.

The real binaries validate these texts in tests/integration/test_lb_configs.py; here the
shape is pinned so that a change in what the renderers write is seen in review.
"""

from __future__ import annotations

import re

import pytest

from cloudlet.lb import (
    Backend,
    LbConfig,
    Listener,
    Vrrp,
    daemons,
    haproxy_argv,
    haproxy_config,
    keepalived_argv,
    keepalived_check_argv,
    keepalived_config,
    nginx_argv,
    nginx_stream_config,
    runtime_paths,
    section_name,
)

RT = "/run/cloudlet/lb-a"
WEB = Listener(
    "lb-listener/web",
    "tcp",
    "198.18.0.5",
    443,
    (Backend("vm/b", "10.0.0.6", 8443), Backend("vm/a", "10.0.0.5", 443)),
)
GAME = Listener("lb-listener/game", "udp", "198.18.0.5", 7777, (Backend("vm/g", "10.0.0.7", 7000),))
VRRP = Vrrp("vi_root", "eth0", "198.18.0.5/24", 51, 150, ("198.18.0.4", "198.18.0.3"), "198.18.0.2")


def config(listeners=(WEB, GAME), vrrp=VRRP, name="lb/root"):
    return LbConfig(name, tuple(listeners), vrrp, RT)


def block(text: str, opener: str) -> list[str]:
    """The stripped lines of the brace block opened by the line starting with ``opener``."""
    lines = [ln.strip() for ln in text.splitlines()]
    start = next(i for i, ln in enumerate(lines) if ln.startswith(opener))
    depth, body = 0, []
    for ln in lines[start:]:
        depth += ln.count("{") - ln.count("}")
        body.append(ln)
        if depth == 0:
            return body[1:-1]
    raise AssertionError(f"block {opener!r} never closes")


def section(text: str, header: str) -> list[str]:
    """An haproxy section's stripped lines, up to the next blank line."""
    lines = text.splitlines()
    start = lines.index(header)
    out = []
    for ln in lines[start + 1 :]:
        if not ln.strip():
            break
        out.append(ln.strip())
    return out


# -- haproxy ---------------------------------------------------------------------------------------


def test_haproxy_one_frontend_and_backend_per_tcp_listener_with_checked_servers():
    text = haproxy_config(config())
    assert section(text, "frontend lb-listener_web") == [
        "bind 198.18.0.5:443",
        "default_backend lb-listener_web",
    ]
    assert section(text, "backend lb-listener_web") == [
        "balance roundrobin",
        "server vm_a 10.0.0.5:443 check",
        "server vm_b 10.0.0.6:8443 check",
    ]
    # UDP is not haproxy's: 2.6 refuses dgram addresses
    assert "game" not in text and "7777" not in text
    assert "mode tcp" in section(text, "defaults")


def test_haproxy_short_checks_foreground_and_runtime_files():
    text = haproxy_config(config())
    glob = section(text, "global")
    assert f"stats socket {RT}/haproxy.sock mode 600 level admin expose-fd listeners" in glob
    assert f"pidfile {RT}/haproxy.pid" in glob
    assert "daemon" not in glob  # the supervisor's child is haproxy itself
    (default_server,) = [ln for ln in section(text, "defaults") if ln.startswith("default-server")]
    inter = re.search(r"\binter (\d+)ms", default_server)
    assert inter and int(inter.group(1)) <= 1000
    assert haproxy_argv(config()) == (
        "haproxy",
        "-W",
        "-db",
        "-S",
        f"{RT}/haproxy-master.sock",
        "-f",
        f"{RT}/haproxy.cfg",
    )


def test_haproxy_without_tcp_listeners_has_global_and_defaults_only():
    text = haproxy_config(config(listeners=(GAME,)))
    assert "frontend" not in text and "backend" not in text
    assert text.splitlines()[1] == "global" and "defaults" in text.splitlines()
    assert daemons(config(listeners=(GAME,))) == ("nginx", "keepalived")


def test_ipv6_addresses_are_bracketed_and_normalised():
    li = Listener("v6", "tcp", "fd00:0::1", 80, (Backend("vm/x", "fd00::0:5", 8080),))
    text = haproxy_config(config(listeners=(li,), vrrp=None))
    assert "bind [fd00::1]:80" in text
    assert "server vm_x [fd00::5]:8080 check" in text


# -- nginx -----------------------------------------------------------------------------------------


def test_nginx_stream_one_server_per_udp_listener():
    text = nginx_stream_config(config())
    lines = text.splitlines()
    assert lines[1] == "load_module /usr/lib/nginx/modules/ngx_stream_module.so;"
    assert f"pid {RT}/nginx.pid;" in lines
    assert "error_log stderr notice;" in lines
    assert "http {" not in text and "daemon" not in text
    assert block(text, "upstream lb-listener_game") == [
        "server 10.0.0.7:7000 max_fails=1 fail_timeout=2s;"
    ]
    server = block(text, "server {")
    assert server[:3] == [
        "listen 198.18.0.5:7777 udp;",
        "proxy_pass lb-listener_game;",
        "proxy_responses 1;",
    ]
    (timeout,) = [ln for ln in server if ln.startswith("proxy_timeout")]
    assert timeout == "proxy_timeout 2s;"
    # TCP is haproxy's
    assert "443" not in text


def test_nginx_logs_each_udp_session_for_the_agent_s_statistics():
    """OSS nginx has no statistics API: cloudlet.agent.stats adds up these JSON lines."""
    text = nginx_stream_config(config())
    (fmt,) = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("log_format")]
    assert fmt.startswith("log_format cloudlet_stats escape=json '{")
    fields = dict(re.findall(r'"(\w+)":"(\$\w+)"', fmt))
    assert fields == {
        "listener": "$cloudlet_listener",
        "status": "$status",
        "bytes_in": "$bytes_received",
        "bytes_out": "$bytes_sent",
        "upstream": "$upstream_addr",
        "upstream_bytes_in": "$upstream_bytes_received",
        "session_time": "$session_time",
    }
    server = block(text, "server {")
    assert "set $cloudlet_listener lb-listener_game;" in server
    assert f"access_log {RT}/nginx-stats.log cloudlet_stats;" in server
    assert runtime_paths(config()).nginx_stats_log == f"{RT}/nginx-stats.log"
    # the haproxy side: the stats socket the agent asks, and checks that say DOWN
    hap = haproxy_config(config())
    assert f"stats socket {RT}/haproxy.sock mode 600 level admin" in hap
    assert "server vm_a 10.0.0.5:443 check" in hap


def test_nginx_stream_module_path_can_be_given():
    text = nginx_stream_config(config(), stream_module="/opt/ngx_stream_module.so")
    assert "load_module /opt/ngx_stream_module.so;" in text.splitlines()


def test_nginx_argv_foreground_with_prefix_and_stderr():
    assert nginx_argv(config()) == (
        "nginx",
        "-e",
        "stderr",
        "-p",
        f"{RT}/",
        "-c",
        f"{RT}/nginx.conf",
        "-g",
        "daemon off;",
    )


# -- keepalived ------------------------------------------------------------------------------------


def test_keepalived_unicast_peers_one_per_line():
    """Pitfall: `unicast_peer { a b }` keeps only the first peer and splits the brain."""
    text = keepalived_config(config())
    peers = block(text, "unicast_peer {")
    assert peers == ["198.18.0.3", "198.18.0.4"]
    assert all(len(p.split()) == 1 for p in peers)


def test_keepalived_instance_shape():
    inst = block(keepalived_config(config()), "vrrp_instance vi_root {")
    assert inst[:6] == [
        "state BACKUP",
        "interface eth0",
        "virtual_router_id 51",
        "priority 150",
        "advert_int 0.1",
        "unicast_src_ip 198.18.0.2",
    ]
    assert block(keepalived_config(config()), "virtual_ipaddress {") == ["198.18.0.5/24 dev eth0"]
    assert "vrrp_version 3" in block(keepalived_config(config()), "global_defs {")
    assert "vrrp_strict" not in keepalived_config(config())
    assert "nopreempt" not in inst


def test_keepalived_nopreempt_and_multicast():
    v = Vrrp("vi", "eth1", "10.1.0.9/24", 9, 90, (), "10.1.0.2", advert_interval=1, preempt=False)
    inst = block(keepalived_config(config(vrrp=v)), "vrrp_instance vi {")
    assert "nopreempt" in inst and "advert_int 1" in inst
    assert "mcast_src_ip 10.1.0.2" in inst and not any("unicast" in ln for ln in inst)


def test_keepalived_without_vrrp_has_global_defs_only():
    text = keepalived_config(config(vrrp=None))
    assert "vrrp_instance" not in text and "global_defs {" in text
    assert daemons(config(vrrp=None)) == ("haproxy", "nginx")


def test_keepalived_argv_foreground_vrrp_only_own_pid_files():
    argv = keepalived_argv(config())
    assert argv[:6] == ("keepalived", "-n", "-l", "-D", "-G", "-P")
    flags = dict(zip(argv[6::2], argv[7::2], strict=True))
    paths = runtime_paths(config())
    assert flags == {
        "-f": paths.keepalived_conf,
        "-p": paths.keepalived_pid,
        "-r": paths.vrrp_pid,
        "-c": paths.checkers_pid,
    }
    assert all(v.startswith(RT + "/") for v in flags.values())
    assert keepalived_check_argv("/x.conf") == ("keepalived", "-t", "-e", "-f", "/x.conf")


# -- determinism and validation --------------------------------------------------------------------


def test_rendering_ignores_input_order():
    shuffled_web = Listener(WEB.name, "tcp", WEB.bind, WEB.port, tuple(reversed(WEB.backends)))
    shuffled_vrrp = Vrrp(
        VRRP.instance,
        VRRP.interface,
        VRRP.vip,
        VRRP.router_id,
        VRRP.priority,
        tuple(reversed(VRRP.peers)),
        VRRP.source,
    )
    other = LbConfig("lb/root", (GAME, shuffled_web), shuffled_vrrp, RT)
    for render in (haproxy_config, nginx_stream_config, keepalived_config):
        assert render(config()) == render(other)
        assert render(config()) == render(config())


def test_listeners_sorted_by_name():
    b = (Backend("vm/a", "10.0.0.5", 1),)
    ls = [Listener(n, "tcp", "10.9.0.1", p, b) for n, p in (("zz", 1), ("aa", 2), ("mm", 3))]
    text = haproxy_config(config(listeners=ls))
    assert re.findall(r"^frontend (\S+)$", text, re.M) == ["aa", "mm", "zz"]


def test_listener_without_backends_is_not_rendered():
    empty_tcp = Listener("e", "tcp", "10.9.0.1", 80, ())
    empty_udp = Listener("u", "udp", "10.9.0.1", 53, ())
    cfg = config(listeners=(empty_tcp, empty_udp), vrrp=None)
    assert "frontend" not in haproxy_config(cfg)
    assert "upstream" not in nginx_stream_config(cfg)
    assert daemons(cfg) == ()


def test_section_name_keeps_only_safe_characters():
    assert section_name("vm/game") == "vm_game"
    assert section_name("a b{c};\n#d") == "a_b_c____d"
    with pytest.raises(ValueError):
        section_name("")


@pytest.mark.parametrize(
    "build",
    [
        lambda: Backend("", "10.0.0.1", 1),
        lambda: Backend("x", "10.0.0.256", 1),
        lambda: Backend("x", "example.com", 1),
        lambda: Backend("x", "10.0.0.1", 0),
        lambda: Backend("x", "10.0.0.1", 65536),
        lambda: Backend("x", "10.0.0.1", True),
        lambda: Listener("l", "sctp", "10.0.0.1", 1, ()),  # type: ignore[arg-type]
        lambda: Listener("l", "tcp", "10.0.0.1", 1, [Backend("x", "10.0.0.1", 1)]),  # type: ignore[arg-type]
        lambda: Listener(
            "l",
            "tcp",
            "10.0.0.1",
            1,
            (Backend("a/b", "10.0.0.1", 1), Backend("a_b", "10.0.0.2", 1)),
        ),
        lambda: Vrrp("v", "eth0", "10.0.0.5", 1, 100, (), "10.0.0.1"),  # no prefix
        lambda: Vrrp("v", "eth0", "10.0.0.5/24", 0, 100, (), "10.0.0.1"),
        lambda: Vrrp("v", "eth0", "10.0.0.5/24", 256, 100, (), "10.0.0.1"),
        lambda: Vrrp("v", "eth0", "10.0.0.5/24", 1, 255, (), "10.0.0.1"),
        lambda: Vrrp("v", "eth0", "10.0.0.5/24", 1, 100, ("10.0.0.1",), "10.0.0.1"),
        lambda: Vrrp("v", "eth0", "10.0.0.5/24", 1, 100, ("10.0.0.2", "10.0.0.2"), "10.0.0.1"),
        lambda: Vrrp("v", "eth0", "10.0.0.5/24", 1, 100, ("fd00::2",), "10.0.0.1"),
        lambda: Vrrp("v", "eth0", "10.0.0.5/24", 1, 100, (), "10.0.0.1", advert_interval=0.001),
        lambda: Vrrp("v", "eth0", "10.0.0.5/24", 1, 100, (), "10.0.0.1", advert_interval=41),
        lambda: Vrrp("v", "a-very-long-interface", "10.0.0.5/24", 1, 100, (), "10.0.0.1"),
        lambda: Vrrp("v w", "eth0", "10.0.0.5/24", 1, 100, (), "10.0.0.1"),
        lambda: Vrrp(
            "v", "eth0", "10.0.0.5/24", 1, 100, (), "10.0.0.1", state="MASTER", preempt=False
        ),
        lambda: LbConfig("x", (WEB, WEB), None, RT),
        lambda: LbConfig("x", (WEB, Listener("other", "tcp", WEB.bind, WEB.port, ())), None, RT),
        lambda: LbConfig("x", (), None, "relative/dir"),
        lambda: LbConfig("x", (), None, "/run/with space"),
        lambda: LbConfig("x", (), None, "/run/" + "d" * 100),
    ],
)
def test_invalid_inputs_are_refused_when_built(build):
    with pytest.raises((ValueError, TypeError)):
        build()


def test_same_port_on_both_protocols_is_fine():
    udp = Listener("web-udp", "udp", WEB.bind, WEB.port, (Backend("vm/a", "10.0.0.5", 443),))
    cfg = config(listeners=(WEB, udp))
    assert "bind 198.18.0.5:443" in haproxy_config(cfg)
    assert "listen 198.18.0.5:443 udp;" in nginx_stream_config(cfg)
