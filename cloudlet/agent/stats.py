"""Per-listener traffic figures of one LB, read from its running daemons.

TCP (haproxy): ``show stat`` on the stats socket the renderer configures
(:func:`cloudlet.lb.runtime_paths` ``haproxy_socket``): per listener the
frontend's ``scur`` (sessions now), ``stot`` (sessions since the worker
started), ``bin`` and ``bout`` (bytes from and to clients), and per back-end
its server's ``status`` from haproxy's own health checks. haproxy keeps these
per worker, so a reload starts them from zero again: they are Prometheus
counters, which tolerate a reset.

UDP (nginx stream): OSS nginx has no statistics API (no per-server stub
status for stream), so the renderer logs every finished session as a JSON
line (``nginx_stats_log``) and this module adds the lines up. It reads the
log incrementally, remembering its offset and the running totals in a state
file beside it, so the totals survive the agent's restarts and nginx's
reloads; when the log passes :data:`ROTATE_AT` bytes it is renamed and nginx
is told to reopen (``SIGUSR1``); the renamed file is read on until nginx
writes the new one, then removed, so no session is lost. (nginx's worker,
``nobody``, reopens the file itself: it needs search permission on the
runtime directory, e.g. 0755; without it the worker keeps the old file and
the counts stay right, but that file grows.) Three honest limits follow
from logging at a session's end:

- ``sessions_current`` is 0: nginx logs a session when it ends and says
  nothing of the ones in flight (with ``proxy_responses 1`` a session lasts
  one round trip, or until ``proxy_timeout`` when unanswered);
- figures lag by at most one session's life (2 s at most, the renderer's
  ``proxy_timeout``);
- a back-end's ``up`` is passive: nginx stream has no active health checks,
  so it says whether the newest session nginx sent to it was answered (True),
  or not (False: refused or timed out; nginx itself then takes it out of
  rotation for ``fail_timeout``, see the renderer), and None while no session
  has gone to it. A back-end nobody sends to keeps its last verdict.

Parsing is pure (:func:`parse_show_stat`, :func:`parse_stats_log`,
:func:`tcp_stats`, :func:`udp_stats`); the reading shell around it is small.
"""

from __future__ import annotations

import contextlib
import csv
import io
import ipaddress
import json
import os
import signal
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from cloudlet.agent.report import BackendState, ListenerStats
from cloudlet.lb import LbConfig, Listener, runtime_paths, section_name

#: Past this size the UDP statistics log is rotated (one session is ~180 bytes).
ROTATE_AT = 1 << 20
#: How long ``show stat`` may take before haproxy counts as unreadable.
SOCKET_TIMEOUT = 2.0


class StatsUnavailable(Exception):
    """A daemon's statistics cannot be read now (not running, socket gone)."""


# -- haproxy: show stat ---------------------------------------------------------------------------


@attrs.frozen
class StatRow:
    """One line of ``show stat``: a frontend, a backend or one of its servers."""

    proxy: str
    service: str
    scur: int
    stot: int
    bin: int
    bout: int
    status: str


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def parse_show_stat(text: str) -> list[StatRow]:
    """The rows of haproxy's ``show stat`` CSV (its header line starts ``# ``)."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        raise ValueError("not haproxy's show stat output: no '# pxname,...' header")
    body = "\n".join([lines[0][2:], *(ln for ln in lines[1:] if ln.strip())])
    return [
        StatRow(
            proxy=row.get("pxname") or "",
            service=row.get("svname") or "",
            scur=_int(row.get("scur")),
            stot=_int(row.get("stot")),
            bin=_int(row.get("bin")),
            bout=_int(row.get("bout")),
            status=row.get("status") or "",
        )
        for row in csv.DictReader(io.StringIO(body))
    ]


def server_up(status: str) -> bool | None:
    """haproxy's server status as up or down: ``UP 1/2`` is up and failing checks,
    ``DOWN 1/2`` down and passing them; None where no check runs."""
    if status.startswith("UP") or status in ("NOLB", "DRAIN"):
        return True
    if status.startswith(("DOWN", "MAINT")):
        return False
    return None


def _zero(li: Listener) -> ListenerStats:
    return ListenerStats(li.name, li.protocol, 0, 0, 0, 0)


def tcp_stats(cfg: LbConfig, rows: Iterable[StatRow]) -> tuple[ListenerStats, ...]:
    """The TCP listeners of ``cfg`` from ``show stat`` rows.

    A listener without back-ends is not rendered (nothing listens), so it has
    zeros; one that haproxy does not run (yet) is left out, not reported as
    zeros that would read as a counter reset."""
    by_key = {(r.proxy, r.service): r for r in rows}
    out = []
    for li in cfg.listeners:
        if li.protocol != "tcp":
            continue
        if not li.backends:
            out.append(_zero(li))
            continue
        name = section_name(li.name)
        front = by_key.get((name, "FRONTEND"))
        if front is None:
            continue
        backends = []
        for b in li.backends:
            server = by_key.get((name, section_name(b.id)))
            backends.append(BackendState(b.id, server_up(server.status) if server else None))
        out.append(
            ListenerStats(
                li.name, "tcp", front.scur, front.stot, front.bin, front.bout, tuple(backends)
            )
        )
    return tuple(out)


def show_stat(socket_path: str, timeout: float = SOCKET_TIMEOUT) -> str:
    """``show stat`` from haproxy's stats socket (it answers and closes)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(socket_path)
            s.sendall(b"show stat\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
    except OSError as e:
        raise StatsUnavailable(f"haproxy stats socket {socket_path}: {e}") from None
    return b"".join(chunks).decode("utf-8", "replace")


# -- nginx stream: the statistics log -------------------------------------------------------------


@attrs.frozen
class UdpTotals:
    """A UDP listener's figures so far, as added up from the log."""

    sessions: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


@attrs.frozen
class UdpLog:
    """What the log said so far: totals per listener (by section name) and, per
    upstream address, whether the newest session sent there was answered."""

    totals: Mapping[str, UdpTotals] = attrs.field(factory=dict)
    answered: Mapping[str, bool] = attrs.field(factory=dict)


def _split(value: str) -> list[str]:
    # nginx joins the upstreams one session tried with ", " (and groups with " : ")
    return [v.strip() for v in value.replace(" : ", ", ").split(",") if v.strip()]


def parse_stats_log(lines: Iterable[str], into: UdpLog | None = None) -> UdpLog:
    """Add the sessions of ``lines`` (the renderer's ``cloudlet_stats`` format)
    to ``into``; a line that is not one (cut short, garbage) is skipped."""
    totals = dict(into.totals) if into else {}
    answered = dict(into.answered) if into else {}
    for line in lines:
        try:
            entry = json.loads(line)
            listener = str(entry["listener"])
            bytes_in, bytes_out = int(entry["bytes_in"]), int(entry["bytes_out"])
        except (ValueError, KeyError, TypeError):
            continue
        t = totals.get(listener, UdpTotals())
        totals[listener] = UdpTotals(t.sessions + 1, t.bytes_in + bytes_in, t.bytes_out + bytes_out)
        upstreams = _split(str(entry.get("upstream", "")))
        received = _split(str(entry.get("upstream_bytes_in", "")))
        for i, addr in enumerate(upstreams):
            answered[addr] = i < len(received) and _int(received[i]) > 0
    return UdpLog(totals, answered)


def _hostport(address: str, port: int) -> str:
    """How nginx writes an upstream address: normalised, IPv6 in brackets."""
    ip = ipaddress.ip_address(address)
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def udp_stats(cfg: LbConfig, log: UdpLog) -> tuple[ListenerStats, ...]:
    """The UDP listeners of ``cfg`` from what the log said (see the module's limits)."""
    out = []
    for li in cfg.listeners:
        if li.protocol != "udp":
            continue
        t = log.totals.get(section_name(li.name), UdpTotals())
        backends = tuple(
            BackendState(b.id, log.answered.get(_hostport(b.address, b.port))) for b in li.backends
        )
        out.append(ListenerStats(li.name, "udp", 0, t.sessions, t.bytes_in, t.bytes_out, backends))
    return tuple(out)


@attrs.frozen
class _Cursor:
    """Where reading stopped: the live log's inode and offset, and the rotated
    file still to finish (with its offset), if any."""

    inode: int | None = None
    offset: int = 0
    rotated_offset: int | None = None


def _state_path(cfg: LbConfig) -> Path:
    return Path(runtime_paths(cfg).nginx_stats_log + ".state")


def _load(path: Path) -> tuple[_Cursor, UdpLog]:
    try:
        data: Any = json.loads(path.read_text())
        cursor = _Cursor(data["inode"], int(data["offset"]), data["rotated_offset"])
        totals = {k: UdpTotals(*(int(x) for x in v)) for k, v in data["totals"].items()}
        answered = {str(k): bool(v) for k, v in data["answered"].items()}
        return cursor, UdpLog(totals, answered)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return _Cursor(), UdpLog()  # none yet, or unreadable: count from here


def _save(path: Path, cursor: _Cursor, log: UdpLog) -> None:
    data = {
        "inode": cursor.inode,
        "offset": cursor.offset,
        "rotated_offset": cursor.rotated_offset,
        "totals": {k: [t.sessions, t.bytes_in, t.bytes_out] for k, t in log.totals.items()},
        "answered": dict(log.answered),
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, sort_keys=True))
    os.replace(tmp, path)


def _read_from(path: Path, offset: int) -> tuple[list[str], int]:
    """The complete lines of ``path`` after ``offset``, and the offset after them
    (a line nginx is still writing waits for the next read)."""
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    return data[:end].decode("utf-8", "replace").splitlines(), offset + end


def _signal_reopen(pid_file: str) -> bool:
    """Ask nginx to reopen its logs; False if no nginx runs to ask."""
    try:
        os.kill(int(Path(pid_file).read_text().split()[0]), signal.SIGUSR1)
        return True
    except (OSError, ValueError, IndexError):
        return False


def read_udp_log(cfg: LbConfig) -> UdpLog:
    """Add the sessions logged since the last call to the saved totals (see the module)."""
    paths = runtime_paths(cfg)
    live, rotated = Path(paths.nginx_stats_log), Path(paths.nginx_stats_log + ".1")
    state = _state_path(cfg)
    cursor, log = _load(state)
    if cursor.rotated_offset is not None:
        cursor, log = _finish_rotated(live, rotated, cursor, log)
    try:
        st = live.stat()
    except FileNotFoundError:
        log = _pruned(cfg, log)
        _save(state, cursor, log)
        return log
    offset = cursor.offset if st.st_ino == cursor.inode and st.st_size >= cursor.offset else 0
    lines, offset = _read_from(live, offset)
    log = parse_stats_log(lines, log)
    cursor = _Cursor(st.st_ino, offset, cursor.rotated_offset)
    if offset >= ROTATE_AT and cursor.rotated_offset is None:
        os.replace(live, rotated)
        if _signal_reopen(paths.nginx_pid):
            cursor = _Cursor(None, 0, offset)
        else:  # no nginx to reopen: keep the file where whoever writes it writes
            os.replace(rotated, live)
    log = _pruned(cfg, log)
    _save(state, cursor, log)
    return log


def _finish_rotated(
    live: Path, rotated: Path, cursor: _Cursor, log: UdpLog
) -> tuple[_Cursor, UdpLog]:
    """Read on in the rotated file; remove it once nginx writes the new one.

    A line in the new file proves that nginx's worker (one: the renderer's
    ``worker_processes 1``) reopened; before that it may still append here
    (a worker that could not reopen, e.g. a runtime directory it cannot
    search, keeps writing here: counted, never lost)."""
    if not rotated.exists():
        return attrs.evolve(cursor, rotated_offset=None), log
    assert cursor.rotated_offset is not None
    lines, offset = _read_from(rotated, cursor.rotated_offset)
    log = parse_stats_log(lines, log)
    try:
        reopened = live.stat().st_size > 0
    except FileNotFoundError:
        reopened = False
    if reopened:
        lines, _ = _read_from(rotated, offset)  # what came in meanwhile
        log = parse_stats_log(lines, log)
        rotated.unlink()
        return attrs.evolve(cursor, rotated_offset=None), log
    return attrs.evolve(cursor, rotated_offset=offset), log


def _pruned(cfg: LbConfig, log: UdpLog) -> UdpLog:
    """Only what ``cfg``'s UDP listeners can report: a removed listener or back-end
    is forgotten (and one added back counts from zero)."""
    udp = [li for li in cfg.listeners if li.protocol == "udp"]
    names = {section_name(li.name) for li in udp}
    addrs = {_hostport(b.address, b.port) for li in udp for b in li.backends}
    return UdpLog(
        {k: v for k, v in log.totals.items() if k in names},
        {k: v for k, v in log.answered.items() if k in addrs},
    )


# -- both -----------------------------------------------------------------------------------------


def collect(cfg: LbConfig) -> tuple[ListenerStats, ...]:
    """Every listener of ``cfg`` whose daemon can be read now, in ``cfg``'s order.

    A TCP listener is left out while haproxy's socket does not answer (not
    running, mid-restart): no figures rather than zeros."""
    tcp: tuple[ListenerStats, ...] = ()
    if any(li.protocol == "tcp" for li in cfg.listeners):
        with contextlib.suppress(StatsUnavailable, ValueError):
            tcp = tcp_stats(cfg, _rows(cfg))
    udp: tuple[ListenerStats, ...] = ()
    if any(li.protocol == "udp" for li in cfg.listeners):
        udp = udp_stats(cfg, read_udp_log(cfg))
    by_name = {s.listener: s for s in (*tcp, *udp)}
    return tuple(by_name[li.name] for li in cfg.listeners if li.name in by_name)


def _rows(cfg: LbConfig) -> list[StatRow]:
    if not any(li.backends for li in cfg.listeners if li.protocol == "tcp"):
        return []  # haproxy has no work and may not run: no socket to ask
    return parse_show_stat(show_stat(runtime_paths(cfg).haproxy_socket))
