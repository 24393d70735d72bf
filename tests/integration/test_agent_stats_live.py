"""The LB agent's statistics from real haproxy and nginx carrying real traffic.

Like test_lb_configs.py (whose namespace and back-end helpers this reuses): all
traffic stays on 127.0.0.1 inside a namespace the test makes and deletes.
Known numbers of connections and datagrams go through; ``stats.collect`` must
count exactly those sessions and bytes, see a held connection as current, and
say a back-end is down once its server is stopped.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_lb_configs import (
    HELD_CLIENT,
    RESPONDER,
    Netns,
    _start_lb,
    _wait_for_line,
    netns,
    runtime_dir,  # noqa: F401  (the fixture)
)

from cloudlet.agent import stats
from cloudlet.agent.report import ListenerStats
from cloudlet.lb import Backend, LbConfig, Listener, runtime_paths

pytestmark = pytest.mark.integration

REQUEST = b"GET / HTTP/1.0\r\n\r\n"
# RESPONDER's answer for an id of four characters (vm/a, vm/b)
ANSWER = b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nvm/a\n"
DATAGRAM = b"hello\n"

# N connections (or datagrams, each from a new socket: a new session), one after another
TCP_CLIENTS = r"""
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for _ in range(n):
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    print(data.split(b"\r\n\r\n", 1)[1].decode().strip(), flush=True)
"""
UDP_CLIENTS = r"""
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for _ in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1.0)
    s.sendto(b"hello\n", (host, port))
    try:
        print(s.recv(4096).decode().strip() or "<empty>", flush=True)
    except socket.timeout:
        print("<timeout>", flush=True)
    s.close()
"""

TCP_PORT, UDP_PORT = 8443, 7777
SERVERS = {"vm/a": (18081, 18053), "vm/b": (18082, 18054)}


def _config(rt: Path) -> LbConfig:
    tcp = tuple(Backend(i, "127.0.0.1", t) for i, (t, _) in SERVERS.items())
    udp = tuple(Backend(i, "127.0.0.1", u) for i, (_, u) in SERVERS.items())
    return LbConfig(
        "lb/stats",
        (
            Listener("lb-listener/web", "tcp", "127.0.0.1", TCP_PORT, tcp),
            Listener("lb-listener/game", "udp", "127.0.0.1", UDP_PORT, udp),
        ),
        None,
        str(rt),
    )


def _by_name(cfg: LbConfig) -> dict[str, ListenerStats]:
    return {s.listener: s for s in stats.collect(cfg)}


def _until(cfg: LbConfig, ok: Callable[[dict[str, ListenerStats]], bool], timeout: float = 10.0):
    """Collect until ``ok`` holds (figures appear when a session ends, checks take a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        got = _by_name(cfg)
        if ok(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def _ups(s: ListenerStats) -> dict[str, bool | None]:
    return {b.id: b.up for b in s.backends}


def _clients(ns: Netns, script: str, port: int, n: int) -> list[str]:
    r = ns.run([sys.executable, "-c", script, "127.0.0.1", str(port), str(n)], check=True)
    return r.stdout.split()


def _start_servers(ns: Netns, rt: Path) -> dict[str, int]:
    pids = {}
    for ident, (t, u) in SERVERS.items():
        log = rt / f"responder-{t}.log"
        p = ns.start([sys.executable, "-c", RESPONDER, ident, str(t), str(u)], log)
        _wait_for_line(log, "ready", p, 10)
        pids[ident] = p.pid
    return pids


def test_collect_counts_the_sessions_and_bytes_that_went_through(runtime_dir):  # noqa: F811
    cfg = _config(runtime_dir)
    n = 10
    with netns() as ns:
        pids = _start_servers(ns, runtime_dir)
        _start_lb(ns, runtime_dir, cfg)
        up = _until(cfg, lambda g: _ups(g["lb-listener/web"]) == {"vm/a": True, "vm/b": True})
        assert _ups(up["lb-listener/web"]) == {"vm/a": True, "vm/b": True}, up
        before = up["lb-listener/web"]
        assert (before.sessions_total, before.bytes_in, before.bytes_out) == (0, 0, 0)
        assert _ups(up["lb-listener/game"]) == {"vm/a": None, "vm/b": None}  # no session yet

        assert sorted(set(_clients(ns, TCP_CLIENTS, TCP_PORT, n))) == ["vm/a", "vm/b"]
        assert sorted(set(_clients(ns, UDP_CLIENTS, UDP_PORT, n))) == ["vm/a", "vm/b"]
        got = _until(cfg, lambda g: g["lb-listener/game"].sessions_total >= n)
        web, game = got["lb-listener/web"], got["lb-listener/game"]
        assert (web.protocol, web.sessions_current, web.sessions_total) == ("tcp", 0, n)
        assert (web.bytes_in, web.bytes_out) == (n * len(REQUEST), n * len(ANSWER))
        assert (game.protocol, game.sessions_total) == ("udp", n)
        assert (game.bytes_in, game.bytes_out) == (n * len(DATAGRAM), n * len(b"vm/a\n"))
        assert _ups(game) == {"vm/a": True, "vm/b": True}

        # a connection held open is a current session
        go = runtime_dir / "go"
        held = ns.start(
            [sys.executable, "-c", HELD_CLIENT, "127.0.0.1", str(TCP_PORT), str(go)],
            runtime_dir / "held.log",
        )
        _wait_for_line(runtime_dir / "held.log", "connected", held, 10)
        now = _until(cfg, lambda g: g["lb-listener/web"].sessions_current == 1)
        assert now["lb-listener/web"].sessions_current == 1
        go.touch()
        assert held.wait(timeout=10) == 0
        done = _until(cfg, lambda g: g["lb-listener/web"].sessions_current == 0)
        assert (
            done["lb-listener/web"].sessions_current,
            done["lb-listener/web"].sessions_total,
        ) == (
            0,
            n + 1,
        )

        # vm/b's server stops: haproxy's checks take it down; nginx's next session to it fails
        os.killpg(pids["vm/b"], signal.SIGTERM)
        down = _until(cfg, lambda g: _ups(g["lb-listener/web"])["vm/b"] is False)
        assert _ups(down["lb-listener/web"]) == {"vm/a": True, "vm/b": False}
        # round robin: some go to vm/b, refused (nginx answers those with an empty datagram)
        answers = _clients(ns, UDP_CLIENTS, UDP_PORT, 4)
        assert "vm/a" in answers and "vm/b" not in answers and set(answers) != {"vm/a"}, answers
        game_down = _until(cfg, lambda g: _ups(g["lb-listener/game"])["vm/b"] is False)
        assert _ups(game_down["lb-listener/game"]) == {"vm/a": True, "vm/b": False}
        assert game_down["lb-listener/game"].sessions_total == n + 4


@pytest.mark.parametrize("mode", [0o755, 0o700], ids=["worker-reopens", "worker-cannot-reopen"])
def test_udp_totals_go_on_across_rotations_of_the_log_by_the_real_nginx(
    runtime_dir,  # noqa: F811
    monkeypatch,
    mode,
):
    """nginx's worker (``nobody``) reopens the log itself: it can in a 0755 runtime
    directory (as ``local`` makes it), not in a 0700 one, where it keeps writing
    the renamed file; either way no session is lost."""
    runtime_dir.chmod(mode)
    cfg = _config(runtime_dir)
    log = Path(runtime_paths(cfg).nginx_stats_log)
    rotated = Path(str(log) + ".1")
    monkeypatch.setattr(stats, "ROTATE_AT", 400)  # a line is ~155 bytes: rotate after 3
    with netns() as ns:
        _start_servers(ns, runtime_dir)
        _start_lb(ns, runtime_dir, cfg)
        sent = 0
        for _ in range(4):
            assert set(_clients(ns, UDP_CLIENTS, UDP_PORT, 3)) <= {"vm/a", "vm/b"}
            sent += 3
            got = _until(cfg, lambda g, sent=sent: g["lb-listener/game"].sessions_total >= sent)
            assert got["lb-listener/game"].sessions_total == sent
            assert got["lb-listener/game"].bytes_in == sent * len(DATAGRAM)
            assert rotated.exists() or log.stat().st_size < 400
        nginx_log = (runtime_dir / "nginx.log").read_text()
    if mode == 0o755:
        assert "Permission denied" not in nginx_log
        assert log.stat().st_size < 400 * 2  # rotated: it does not grow
    else:
        assert "Permission denied" in nginx_log  # why the worker kept the old file
        assert log.stat().st_size == 0 and rotated.stat().st_size >= 3 * 155
