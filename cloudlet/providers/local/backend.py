"""The back-end every VM namespace of the ``local`` platform runs.

A VM on ``local`` has no guest, so something must answer on the ports the spec
exposes for it, or no test could tell whether a packet crossed what cloudlet
built. This program is that something: one foreground process per VM namespace
(the provider supervises it), one thread, one ``selectors`` loop for all its
sockets, stdlib only, so that fifty of them start in a blink and cost little.

What it answers, on every ``--tcp`` port:

- an HTTP/1.x request: ``200``, ``text/plain``, ``Connection: close``; the body is
  the VM's resource id and a newline (``vm/game\\n``) for every path and method,
  except ``/healthz``, whose body is ``ok\\n``; ``HEAD`` gets the headers only.
  ``X-Cloudlet-Port`` carries the local port that answered.
- anything else (raw bytes, or a client that connects and stays silent for
  ``--idle-timeout`` seconds, or one that half-closes without sending): the line
  ``vm/game\\n``.

On every ``--udp`` port, each datagram gets the line ``vm/game\\n`` back.

The request is read before the answer is written (pitfall 6 of the data-plane
reference: a responder that answers first breaks curl about one time in four),
and after the answer the connection is half-closed and drained until the peer
closes (up to 2 s and 16 MiB): closing a socket with unread bytes, a request body
say, makes the kernel send a reset that kills the client's upload. A silent
client costs one registered socket until its timeout and never delays another.

Command line::

    python -m cloudlet.providers.local.backend --id vm/game \\
        --tcp 443 --tcp 8443 --udp 53 [--bind 0.0.0.0] [--ready-file PATH] \\
        [--idle-timeout 1.0] [--mark NAME=VALUE ...]

Options take ``--opt VALUE`` or ``--opt=VALUE``; ``--tcp``, ``--udp`` and
``--mark`` repeat; a port given twice is bound once; no port at all is allowed
(the process then only idles, so every VM can be supervised alike). ``--bind``
with a ``:`` binds IPv6.

``--ready-file`` is removed at start and written (atomically) only once every
socket is bound, with one JSON line ``{"pid", "id", "bind", "tcp", "udp"}`` (the
ports actually bound, so port ``0`` picks a free one); it is removed again on a
clean exit. ``--mark NAME=VALUE`` is accepted and ignored: it exists so the
provider can tag the process (its cloudlet, its uid) where ``/proc/PID/cmdline``
and ``pgrep -f`` see it. SIGTERM and SIGINT exit with code 0; a socket that
cannot be bound exits with code 1 and writes no ready file; a bad command line
exits with code 2.

Importing this module imports nothing of cloudlet but the package ``__init__``
files on its path, which must stay light (checked by tests/unit/test_backend.py),
and no argparse or json (a megabyte of regexes per VM). Run it as
``python -S -m ...`` with ``PYTHONPATH`` set to the directory holding the
``cloudlet`` package: without ``site`` the venv's editable-install finder (pathlib,
urllib...) is not loaded, which saves about 1.3 MB and some milliseconds per VM.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Sequence

MAX_HEAD = 16384  # bytes of request head read before answering regardless
DRAIN_TIMEOUT = 2.0  # seconds a closed-for-writing connection may take to close its side
DRAIN_MAX = 16 << 20  # bytes discarded after the answer (a request body) before a reset
BATCH = 64  # accepts / datagrams handled per readiness event, so no socket starves the rest
HTTP_METHOD_MAX = 16


def _method_like(token: bytes) -> bool:
    return 0 < len(token) <= HTTP_METHOD_MAX and token.isalpha() and token.isupper()


def _http_request_line(line: bytes) -> tuple[bytes, bytes] | None:
    """(method, target) when ``line`` is an HTTP/1.x request line, else None."""
    parts = line.rstrip(b"\r").split(b" ")
    if len(parts) == 3 and _method_like(parts[0]) and parts[2].startswith(b"HTTP/1."):
        return parts[0], parts[1]
    return None


def _could_become_http(buf: bytes) -> bool:
    """Whether ``buf``, without a newline yet, may still grow into an HTTP request line."""
    method, space, _rest = buf.partition(b" ")
    if not space:
        return len(method) <= HTTP_METHOD_MAX and (not method or _method_like(method))
    return _method_like(method)


def http_response(method: bytes, target: bytes, ident: str, port: int) -> bytes:
    """The whole HTTP answer: the resource id for every path, ``ok`` for ``/healthz``."""
    path = target.split(b"?", 1)[0]
    body = b"ok\n" if path == b"/healthz" else f"{ident}\n".encode()
    head = (
        "HTTP/1.1 200 OK\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"X-Cloudlet-Port: {port}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return head if method == b"HEAD" else head + body


def answer(buf: bytes, ident: str, port: int, final: bool) -> bytes | None:
    """What to send for the bytes read so far, or None to read on.

    Pure, so that the protocol is tested without sockets. ``final`` means no more
    bytes will come (the peer half-closed, the head grew too big, or the idle
    timeout passed): answer with what is there.
    """
    line = f"{ident}\n".encode()
    end = buf.find(b"\n")
    if end < 0:
        return line if final or (buf and not _could_become_http(buf)) else None
    request = _http_request_line(buf[:end])
    if request is None:
        return line
    if final or b"\n\r\n" in buf or b"\n\n" in buf:
        return http_response(request[0], request[1], ident, port)
    return None


class _Conn:
    """One accepted TCP connection: read the request, write the answer, drain, close."""

    __slots__ = ("budget", "buf", "deadline", "out", "port", "sock", "state")

    def __init__(self, sock: socket.socket, port: int, deadline: float) -> None:
        self.sock = sock
        self.port = port
        self.deadline = deadline
        self.buf = b""
        self.out = memoryview(b"")
        self.budget = DRAIN_MAX  # bytes still discarded while draining
        self.state = "read"  # read -> write -> drain -> closed


class Backend:
    """The event loop: listeners, datagram sockets, connections and their deadlines."""

    def __init__(self, ident: str, idle_timeout: float) -> None:
        self.ident = ident
        self.line = f"{ident}\n".encode()
        self.idle_timeout = idle_timeout
        self.sel = selectors.DefaultSelector()
        self.timers: list[tuple[float, int, _Conn]] = []
        self.seq = 0
        self.stopping = False
        self.conns: set[_Conn] = set()
        self.wake_r, self.wake_w = socket.socketpair()
        for s in (self.wake_r, self.wake_w):
            s.setblocking(False)
        self.sel.register(self.wake_r, selectors.EVENT_READ, ("wake", 0))
        self.listeners: list[socket.socket] = []

    def serve(self, tcp: Sequence[socket.socket], udp: Sequence[socket.socket]) -> None:
        """Take the bound sockets; the loop watches them from the next ``run``."""
        self.listeners += [*tcp, *udp]
        for s in tcp:
            self.sel.register(s, selectors.EVENT_READ, ("accept", s.getsockname()[1]))
        for s in udp:
            self.sel.register(s, selectors.EVENT_READ, ("udp", s.getsockname()[1]))

    def install_signals(self) -> None:
        """SIGTERM/SIGINT set a flag; the wakeup socket gets the loop out of ``select``."""
        signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)

        def stop(_signum: int, _frame: object) -> None:
            self.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def run(self) -> None:
        while not self.stopping:
            events = self.sel.select(self._next_timeout())
            for key, mask in events:
                self._dispatch(key, mask)
            self._expire(time.monotonic())

    def close(self) -> None:
        for conn in list(self.conns):
            self._close(conn)
        for s in self.listeners:
            self.sel.unregister(s)
            s.close()
        self.sel.close()
        self.wake_r.close()
        self.wake_w.close()

    # -- the loop's parts ---------------------------------------------------------

    def _dispatch(self, key: selectors.SelectorKey, mask: int) -> None:
        data = key.data
        if isinstance(data, _Conn):
            if data.state == "write":
                self._write(data)
            elif data.state != "closed":
                self._read(data)
            return
        kind, port = data
        if kind == "accept":
            self._accept(key.fileobj, port)  # type: ignore[arg-type]
        elif kind == "udp":
            self._datagrams(key.fileobj)  # type: ignore[arg-type]
        else:
            self._drain_wakeup()

    def _next_timeout(self) -> float | None:
        while self.timers:
            deadline, _seq, conn = self.timers[0]
            if conn.state != "closed" and conn.deadline == deadline:
                return max(0.0, deadline - time.monotonic())
            heapq.heappop(self.timers)
        return None

    def _arm(self, conn: _Conn, deadline: float) -> None:
        conn.deadline = deadline
        self.seq += 1
        heapq.heappush(self.timers, (deadline, self.seq, conn))

    def _expire(self, now: float) -> None:
        while self.timers and self.timers[0][0] <= now:
            deadline, _seq, conn = heapq.heappop(self.timers)
            if conn.state == "closed" or conn.deadline != deadline:
                continue
            if conn.state == "read":
                self._respond(conn, final=True)
            else:
                self._close(conn)

    def _drain_wakeup(self) -> None:
        try:
            while self.wake_r.recv(512):
                pass
        except BlockingIOError:
            pass

    def _accept(self, listener: socket.socket, port: int) -> None:
        now = time.monotonic()
        for _ in range(BATCH):
            try:
                sock, _addr = listener.accept()
            except BlockingIOError:
                return
            except OSError as e:  # EMFILE, ECONNABORTED: keep serving the others
                print(f"backend {self.ident}: accept on {port}: {e}", file=sys.stderr)
                return
            sock.setblocking(False)
            conn = _Conn(sock, port, 0.0)
            self.conns.add(conn)
            self.sel.register(sock, selectors.EVENT_READ, conn)
            self._arm(conn, now + self.idle_timeout)

    def _datagrams(self, sock: socket.socket) -> None:
        for _ in range(BATCH):
            try:
                _data, addr = sock.recvfrom(65535)
            except BlockingIOError:
                return
            except OSError:
                continue
            # a full buffer or an unreachable peer loses one answer, as UDP may
            with contextlib.suppress(OSError):
                sock.sendto(self.line, addr)

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            self._close(conn)
            return
        if conn.state == "drain":
            conn.budget -= len(data)
            if not data or conn.budget < 0:
                self._close(conn)
            return
        conn.buf += data
        self._respond(conn, final=not data or len(conn.buf) >= MAX_HEAD)

    def _respond(self, conn: _Conn, final: bool) -> None:
        out = answer(conn.buf, self.ident, conn.port, final)
        if out is None:
            return
        conn.buf = b""
        conn.out = memoryview(out)
        conn.state = "write"
        self._arm(conn, time.monotonic() + DRAIN_TIMEOUT)
        self._write(conn)

    def _write(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._close(conn)
            return
        conn.out = conn.out[sent:]
        if conn.out:
            self.sel.modify(conn.sock, selectors.EVENT_WRITE, conn)
            return
        self._half_close(conn)

    def _half_close(self, conn: _Conn) -> None:
        """Answer sent: stop writing, then read until the peer closes (no reset)."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.state = "drain"
        self.sel.modify(conn.sock, selectors.EVENT_READ, conn)

    def _close(self, conn: _Conn) -> None:
        if conn.state == "closed":
            return
        conn.state = "closed"
        self.conns.discard(conn)
        self.sel.unregister(conn.sock)
        conn.sock.close()


# -- the shell: command line, binding, ready file ----------------------------------


USAGE = """\
usage: python -m cloudlet.providers.local.backend --id ID [--tcp PORT ...] [--udp PORT ...]
           [--bind ADDR] [--ready-file PATH] [--idle-timeout SECONDS] [--mark NAME=VALUE ...]

Answer on every given port with this VM's resource id (the local platform's back-end).

  --id ID                 resource id answered, e.g. vm/game (required)
  --tcp PORT              a TCP port to answer on (repeatable; 0 picks a free one)
  --udp PORT              a UDP port to answer on (repeatable; 0 picks a free one)
  --bind ADDR             address every socket binds (default 0.0.0.0)
  --ready-file PATH       written once every socket is bound, removed on exit
  --idle-timeout SECONDS  a TCP client silent this long gets the id line (default 1.0)
  --mark NAME=VALUE       ignored: tags the process for the provider (/proc/PID/cmdline)
"""

_OPTIONS = {
    "--id": "id",
    "--tcp": "tcp",
    "--udp": "udp",
    "--bind": "bind",
    "--ready-file": "ready_file",
    "--idle-timeout": "idle_timeout",
    "--mark": "mark",
}
_REPEATED = frozenset({"tcp", "udp", "mark"})


class UsageError(Exception):
    """A bad command line: exit 2 with the usage, as argparse would."""


class HelpRequested(Exception):
    """``--help``: print the usage and exit 0."""


class Options:
    """The parsed command line (argparse and its regexes cost a megabyte per VM)."""

    __slots__ = ("bind", "id", "idle_timeout", "mark", "ready_file", "tcp", "udp")

    def __init__(self, raw: dict[str, list[str]]) -> None:
        if "id" not in raw:
            raise UsageError("--id is required")
        self.id = _ident(raw["id"][0])
        self.tcp = [_port(v) for v in raw.get("tcp", [])]
        self.udp = [_port(v) for v in raw.get("udp", [])]
        self.bind = raw.get("bind", ["0.0.0.0"])[0]
        self.ready_file = raw["ready_file"][0] if "ready_file" in raw else None
        self.idle_timeout = _seconds(raw.get("idle_timeout", ["1.0"])[0])
        self.mark = [_mark(v) for v in raw.get("mark", [])]


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise UsageError(f"not a port: {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < 1e6:
        raise UsageError(f"--idle-timeout must be positive: {text!r}")
    return value


def _mark(text: str) -> str:
    name, eq, _value = text.partition("=")
    if not eq or not name:
        raise UsageError(f"--mark expects NAME=VALUE, got {text!r}")
    return text


def _ident(text: str) -> str:
    if not text or not text.isprintable():
        raise UsageError(f"a resource id is one printable line: {text!r}")
    return text


def parse_args(argv: Sequence[str]) -> Options:
    """``--opt VALUE`` or ``--opt=VALUE``; ``--tcp``, ``--udp``, ``--mark`` repeat."""
    raw: dict[str, list[str]] = {}
    args = iter(argv)
    for arg in args:
        if arg in ("-h", "--help"):
            raise HelpRequested
        name, eq, value = arg.partition("=")
        key = _OPTIONS.get(name)
        if key is None:
            raise UsageError(f"unknown argument: {arg!r}")
        if not eq:
            value = next(args, None)  # type: ignore[assignment]
            if value is None:
                raise UsageError(f"{name} needs a value")
        if key in raw and key not in _REPEATED:
            raise UsageError(f"{name} given twice")
        raw.setdefault(key, []).append(value)
    return Options(raw)


def _unique(ports: Sequence[int]) -> list[int]:
    """A port given twice is bound once; each ``0`` asks for a free port of its own."""
    seen: set[int] = set()
    out = []
    for port in ports:
        if port == 0 or port not in seen:
            out.append(port)
            seen.add(port)
    return out


def bind_all(
    addr: str, tcp: Sequence[int], udp: Sequence[int]
) -> tuple[list[socket.socket], list[socket.socket]]:
    """Every socket bound (and listening), or none: a failure closes what was opened."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    opened: list[socket.socket] = []
    try:
        for port in _unique(tcp):
            s = socket.socket(family, socket.SOCK_STREAM)
            opened.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((addr, port))
            s.listen(1024)
            s.setblocking(False)
        for port in _unique(udp):
            s = socket.socket(family, socket.SOCK_DGRAM)
            opened.append(s)
            s.bind((addr, port))
            s.setblocking(False)
    except BaseException:
        for s in opened:
            s.close()
        raise
    n = len(_unique(tcp))
    return opened[:n], opened[n:]


def _remove(path: str | None) -> None:
    if path:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _json_str(text: str) -> str:
    """A JSON string for printable text (no control characters to escape), json unloaded."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ready_line(ident: str, addr: str, tcp: Sequence[int], udp: Sequence[int]) -> str:
    """One JSON object: the pid, the id, and the ports actually bound (port 0 resolved)."""
    return (
        f'{{"pid": {os.getpid()}, "id": {_json_str(ident)}, "bind": {_json_str(addr)}, '
        f'"tcp": [{", ".join(map(str, tcp))}], "udp": [{", ".join(map(str, udp))}]}}\n'
    )


def write_ready(path: str, line: str) -> None:
    """Atomically, so a reader never sees half a file."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(line)
    os.replace(tmp, path)


def _raise_fd_limit() -> None:
    """Many concurrent clients need many descriptors; the hard limit is ours to take."""
    try:
        import resource

        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except HelpRequested:
        print(USAGE, end="")
        return 0
    except UsageError as e:
        print(f"{USAGE}\nerror: {e}", file=sys.stderr)
        return 2
    _remove(args.ready_file)
    _raise_fd_limit()
    backend = Backend(args.id, args.idle_timeout)
    backend.install_signals()  # before binding: a SIGTERM from now on exits with 0
    try:
        tcp, udp = bind_all(args.bind, args.tcp, args.udp)
    except OSError as e:
        print(f"backend {args.id}: cannot bind on {args.bind}: {e}", file=sys.stderr)
        backend.close()
        return 1
    backend.serve(tcp, udp)
    try:
        if args.ready_file:
            ports = ([s.getsockname()[1] for s in group] for group in (tcp, udp))
            write_ready(args.ready_file, ready_line(args.id, args.bind, *ports))
        backend.run()
    finally:
        backend.close()
        _remove(args.ready_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
