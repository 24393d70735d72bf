"""The LB agent's statistics parsers, on output captured from the real daemons.

The files under ``data/lbstats`` were captured on Debian 12 (haproxy 2.6.12,
nginx 1.22.1) from configurations rendered by ``cloudlet.lb``:

- ``show_stat_up.csv``: listener ``lb-listener/web`` over vm/a and vm/b, four
  HTTP requests; ``show_stat_down.csv``: the same after vm/b's server was
  stopped and four more requests (vm/b DOWN); ``show_stat_going_down.csv``:
  vm/a just stopped, one check failed (``UP 1/2``).
- ``nginx-stats-refused.log``: UDP listener ``lb-listener/game`` over vm/a
  (127.0.0.1:18053) and vm/b (:18054), eight datagrams, vm/b stopped after
  the fourth (its sixth session was refused: no answer bytes).
- ``nginx-stats-timeout.log``: ``game`` over vm/a (:18053) and a back-end that
  reads and never answers (:18060, sessions end at proxy_timeout, status 502),
  and ``dead`` over a port nobody serves (:18070); vm/a stopped at the end.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cloudlet.agent import stats
from cloudlet.agent.report import BackendState, ListenerStats
from cloudlet.lb import Backend, LbConfig, Listener, runtime_paths

DATA = Path(__file__).parent / "data" / "lbstats"

WEB = Listener(
    "lb-listener/web",
    "tcp",
    "127.0.0.1",
    8443,
    (Backend("vm/a", "127.0.0.1", 18081), Backend("vm/b", "127.0.0.1", 18082)),
)
GAME = Listener(
    "lb-listener/game",
    "udp",
    "127.0.0.1",
    7777,
    (Backend("vm/a", "127.0.0.1", 18053), Backend("vm/b", "127.0.0.1", 18054)),
)


def cfg(*listeners: Listener, runtime_dir: str = "/run/cl-test") -> LbConfig:
    return LbConfig("lb/x", listeners, None, runtime_dir)


def read(name: str) -> str:
    return (DATA / name).read_text()


# -- haproxy ---------------------------------------------------------------------------------------


def test_show_stat_rows_carry_the_figures_of_frontend_backend_and_servers():
    rows = stats.parse_show_stat(read("show_stat_up.csv"))
    assert [(r.proxy, r.service) for r in rows] == [
        ("lb-listener_web", "FRONTEND"),
        ("lb-listener_web", "vm_a"),
        ("lb-listener_web", "vm_b"),
        ("lb-listener_web", "BACKEND"),
    ]
    front = rows[0]
    assert (front.scur, front.stot, front.bin, front.bout, front.status) == (0, 4, 312, 248, "OPEN")
    assert [r.status for r in rows[1:3]] == ["UP", "UP"]


def test_tcp_stats_map_sections_back_to_listener_and_backend_ids():
    rows = stats.parse_show_stat(read("show_stat_up.csv"))
    assert stats.tcp_stats(cfg(WEB), rows) == (
        ListenerStats(
            "lb-listener/web",
            "tcp",
            0,
            4,
            312,
            248,
            (BackendState("vm/a", True), BackendState("vm/b", True)),
        ),
    )


def test_a_stopped_server_is_down_and_the_counters_keep_growing():
    (s,) = stats.tcp_stats(cfg(WEB), stats.parse_show_stat(read("show_stat_down.csv")))
    assert (s.sessions_total, s.bytes_in, s.bytes_out) == (8, 624, 496)
    assert s.backends == (BackendState("vm/a", True), BackendState("vm/b", False))


def test_a_server_failing_its_first_check_is_still_up():
    rows = stats.parse_show_stat(read("show_stat_going_down.csv"))
    assert [r.status for r in rows if r.service == "vm_a"] == ["UP 1/2"]
    listener = Listener("lb-listener/web", "tcp", "127.0.0.1", 8443, WEB.backends[:1])
    (s,) = stats.tcp_stats(cfg(listener), rows)
    assert s.backends == (BackendState("vm/a", True),)


@pytest.mark.parametrize(
    ("status", "up"),
    [
        ("UP", True),
        ("UP 1/2", True),
        ("NOLB", True),
        ("DRAIN", True),
        ("DOWN", False),
        ("DOWN 1/2", False),
        ("MAINT", False),
        ("MAINT (via x/y)", False),
        ("no check", None),
        ("", None),
    ],
)
def test_server_status_words(status, up):
    assert stats.server_up(status) is up


def test_listeners_haproxy_does_not_run_are_left_out_and_empty_ones_are_zero():
    other = Listener("lb-listener/new", "tcp", "127.0.0.1", 9000, WEB.backends)
    empty = Listener("lb-listener/empty", "tcp", "127.0.0.1", 80, ())
    out = stats.tcp_stats(cfg(WEB, other, empty), stats.parse_show_stat(read("show_stat_up.csv")))
    assert [s.listener for s in out] == ["lb-listener/web", "lb-listener/empty"]
    assert out[1] == ListenerStats("lb-listener/empty", "tcp", 0, 0, 0, 0, ())


def test_a_backend_haproxy_does_not_know_yet_is_unknown():
    added = Listener(
        "lb-listener/web", "tcp", "127.0.0.1", 8443, (*WEB.backends, Backend("vm/c", "1.2.3.4", 1))
    )
    (s,) = stats.tcp_stats(cfg(added), stats.parse_show_stat(read("show_stat_up.csv")))
    assert s.backends[-1] == BackendState("vm/c", None)


def test_show_stat_refuses_what_is_not_its_output():
    with pytest.raises(ValueError):
        stats.parse_show_stat("Unknown command. Please enter one of the following commands only\n")


# -- nginx stream log ------------------------------------------------------------------------------


def test_udp_log_adds_up_sessions_and_bytes_per_listener():
    log = stats.parse_stats_log(read("nginx-stats-refused.log").splitlines())
    assert log.totals == {"lb-listener_game": stats.UdpTotals(8, 48, 35)}
    (s,) = stats.udp_stats(cfg(GAME), log)
    assert (s.protocol, s.sessions_current, s.sessions_total, s.bytes_in, s.bytes_out) == (
        "udp",
        0,
        8,
        48,
        35,
    )
    # vm/b's newest session (the sixth) was refused: no answer; vm/a answered its last
    assert s.backends == (BackendState("vm/a", True), BackendState("vm/b", False))


def test_a_backend_that_times_out_or_nobody_serves_is_down():
    log = stats.parse_stats_log(read("nginx-stats-timeout.log").splitlines())
    silent = Listener(
        "lb-listener/game",
        "udp",
        "127.0.0.1",
        7777,
        (Backend("vm/a", "127.0.0.1", 18053), Backend("vm/s", "127.0.0.1", 18060)),
    )
    dead = Listener(
        "lb-listener/dead", "udp", "127.0.0.1", 7778, (Backend("vm/x", "127.0.0.1", 18070),)
    )
    game, gone = stats.udp_stats(cfg(silent, dead), log)
    assert (game.sessions_total, game.bytes_in, game.bytes_out) == (5, 30, 10)
    # vm/a answered twice, then was stopped: its newest session got nothing
    assert game.backends == (BackendState("vm/a", False), BackendState("vm/s", False))
    assert (gone.sessions_total, gone.bytes_out) == (3, 0)
    assert gone.backends == (BackendState("vm/x", False),)


def test_a_backend_no_session_went_to_is_unknown_and_a_cut_line_is_skipped():
    lines = read("nginx-stats-refused.log").splitlines()[:1]
    log = stats.parse_stats_log([*lines, lines[0][:40], "", "not json"])
    (s,) = stats.udp_stats(cfg(GAME), log)
    assert s.sessions_total == 1
    assert s.backends == (BackendState("vm/a", True), BackendState("vm/b", None))


def test_a_session_that_tried_two_upstreams_judges_each():
    line = json.dumps(
        {
            "listener": "lb-listener_game",
            "status": "200",
            "bytes_in": "6",
            "bytes_out": "5",
            "upstream": "127.0.0.1:18054, 127.0.0.1:18053",
            "upstream_bytes_in": "0, 5",
            "session_time": "0.001",
        }
    )
    log = stats.parse_stats_log([line])
    assert log.answered == {"127.0.0.1:18054": False, "127.0.0.1:18053": True}


def test_ipv6_backends_match_nginx_s_bracketed_addresses():
    v6 = Listener("lb-listener/v6", "udp", "fd00::5", 53, (Backend("vm/a", "fd00:0::10", 53),))
    line = '{"listener":"lb-listener_v6","status":"200","bytes_in":"1","bytes_out":"2",'
    line += '"upstream":"[fd00::10]:53","upstream_bytes_in":"2","session_time":"0.000"}'
    (s,) = stats.udp_stats(cfg(v6), stats.parse_stats_log([line]))
    assert s.backends == (BackendState("vm/a", True),)


# -- reading the log incrementally (files only; the daemons are in the integration test) -----------


def _append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


def test_the_log_is_read_incrementally_and_totals_survive_a_restart(tmp_path):
    c = cfg(GAME, runtime_dir=str(tmp_path))
    log = Path(runtime_paths(c).nginx_stats_log)
    lines = read("nginx-stats-refused.log").splitlines(keepends=True)
    assert stats.read_udp_log(c).totals == {}  # no log yet
    _append(log, "".join(lines[:3]) + lines[3][:20])  # the fourth still being written
    assert stats.read_udp_log(c).totals["lb-listener_game"].sessions == 3
    _append(log, lines[3][20:] + "".join(lines[4:]))
    # a new call (as after an agent restart) continues from the saved state
    assert stats.read_udp_log(c).totals["lb-listener_game"] == stats.UdpTotals(8, 48, 35)
    assert stats.read_udp_log(c).totals["lb-listener_game"].sessions == 8  # nothing new


def test_a_replaced_or_truncated_log_is_read_from_its_start(tmp_path):
    c = cfg(GAME, runtime_dir=str(tmp_path))
    log = Path(runtime_paths(c).nginx_stats_log)
    lines = read("nginx-stats-refused.log").splitlines(keepends=True)
    _append(log, "".join(lines[:4]))
    stats.read_udp_log(c)
    log.write_text(lines[0])  # truncated
    assert stats.read_udp_log(c).totals["lb-listener_game"].sessions == 5
    log.rename(tmp_path / "old.log")  # (kept: a deleted file's inode may be reused at once)
    _append(log, "".join(lines[:2]))  # a new file, though longer than the offset
    assert stats.read_udp_log(c).totals["lb-listener_game"].sessions == 7


def test_a_big_log_is_rotated_and_removed_once_nginx_writes_the_new_one(tmp_path, monkeypatch):
    c = cfg(GAME, runtime_dir=str(tmp_path))
    paths = runtime_paths(c)
    log, rotated = Path(paths.nginx_stats_log), Path(paths.nginx_stats_log + ".1")
    lines = read("nginx-stats-refused.log").splitlines(keepends=True)
    monkeypatch.setattr(stats, "ROTATE_AT", len("".join(lines[:2])))
    reopened: list[int] = []
    monkeypatch.setattr(stats.os, "kill", lambda pid, sig: reopened.append(pid))
    Path(paths.nginx_pid).write_text("4242\n")
    _append(log, "".join(lines[:2]))
    assert stats.read_udp_log(c).totals["lb-listener_game"].sessions == 2
    assert reopened == [4242] and rotated.exists() and not log.exists()
    _append(rotated, lines[2])  # the worker still writes to the old file
    log.touch()  # the master reopened: an empty new file
    assert stats.read_udp_log(c).totals["lb-listener_game"].sessions == 3
    assert rotated.exists()  # the worker may still write there
    _append(rotated, lines[3])
    _append(log, lines[4])  # the worker reopened: the old file is done
    assert stats.read_udp_log(c).totals["lb-listener_game"].sessions == 5
    assert not rotated.exists() and reopened == [4242]
    assert stats.read_udp_log(c).totals["lb-listener_game"].sessions == 5


def test_without_nginx_to_reopen_a_big_log_stays_where_it_is(tmp_path, monkeypatch):
    c = cfg(GAME, runtime_dir=str(tmp_path))
    log = Path(runtime_paths(c).nginx_stats_log)
    monkeypatch.setattr(stats, "ROTATE_AT", 10)
    _append(log, read("nginx-stats-refused.log"))
    assert stats.read_udp_log(c).totals["lb-listener_game"].sessions == 8
    assert log.exists() and not Path(str(log) + ".1").exists()
    _append(log, read("nginx-stats-refused.log").splitlines(keepends=True)[0])
    assert stats.read_udp_log(c).totals["lb-listener_game"].sessions == 9


def test_a_removed_listener_is_forgotten_and_a_corrupt_state_starts_over(tmp_path):
    c = cfg(GAME, runtime_dir=str(tmp_path))
    log = Path(runtime_paths(c).nginx_stats_log)
    _append(log, read("nginx-stats-refused.log"))
    stats.read_udp_log(c)
    other = Listener("lb-listener/other", "udp", "127.0.0.1", 7778, GAME.backends)
    assert stats.read_udp_log(cfg(other, runtime_dir=str(tmp_path))).totals == {}
    state = Path(str(log) + ".state")
    state.write_text("{garbage")
    os.truncate(log, 0)
    _append(log, read("nginx-stats-refused.log").splitlines(keepends=True)[0])
    assert stats.read_udp_log(c).totals["lb-listener_game"].sessions == 1


def test_collect_without_haproxy_leaves_tcp_out_and_keeps_udp(tmp_path):
    c = cfg(WEB, GAME, runtime_dir=str(tmp_path))
    _append(Path(runtime_paths(c).nginx_stats_log), read("nginx-stats-refused.log"))
    (only,) = stats.collect(c)  # no haproxy socket in tmp_path
    assert only.listener == "lb-listener/game" and only.sessions_total == 8
