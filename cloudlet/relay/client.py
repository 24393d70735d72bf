"""The user's side of a relay session: ``cloudlet shell`` and ``cloudlet logs``.

It dials the relay with a token (``protocol.py``), then forwards its
standard input as DATA frames and writes what comes back. On a terminal
the shell runs under a pseudo-terminal on the site: the local terminal is
put in raw mode (every key goes to the VM's terminal, which echoes and
edits), its size is sent at the start and on every ``SIGWINCH``, and it is
restored however the session ends. Without a terminal (``-- CMD`` in a
script) stdin and stdout are plain streams and stderr comes back apart.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import ssl
import struct
import termios
import tty
from collections.abc import Iterator
from typing import Any

from cloudlet.errors import CloudletError
from cloudlet.relay import protocol
from cloudlet.relay.protocol import DATA, ERR, EXIT, Conn


def run(
    address: tuple[str, int],
    ctx: ssl.SSLContext,
    request: dict[str, Any],
    *,
    stdin: int = 0,
    stdout: int = 1,
    stderr: int = 2,
) -> int:
    """One session; its exit status (the remote command's)."""
    use_tty = request["kind"] == "shell" and os.isatty(stdin) and os.isatty(stdout)
    hello = {"role": "user", "tty": use_tty, "term": os.environ.get("TERM", "xterm"), **request}
    if use_tty:
        hello["cols"], hello["rows"] = os.get_terminal_size(stdout)
    conn = protocol.dial(address, ctx, hello)
    try:
        if not use_tty:
            return _pump(conn, stdin if request["kind"] == "shell" else None, stdout, stderr, None)
        with _raw(stdin), _winch() as wake:
            return _pump(conn, stdin, stdout, stderr, (wake, stdout))
    finally:
        conn.sock.close()


def _pump(
    conn: Conn, stdin: int | None, stdout: int, stderr: int, winch: tuple[int, int] | None
) -> int:
    """Forward until the site's EXIT frame; ``winch``: (the wake-up pipe, the
    terminal whose size to send when it fires)."""
    inputs: list[Any] = [conn]
    inputs += [stdin] if stdin is not None else []
    inputs += [winch[0]] if winch is not None else []
    while True:
        ready = [conn] if conn.has_data() else select.select(inputs, [], [])[0]
        if conn in ready:
            if not conn.fill():
                raise CloudletError("the relay closed the session before it ended")
            for kind, payload in conn.frames():
                if kind == EXIT:
                    return int(struct.unpack(">i", payload)[0])
                _write_all(stderr if kind == ERR else stdout, payload)
        if stdin is not None and stdin in ready:
            data = os.read(stdin, protocol.CHUNK)
            conn.send(protocol.frame(DATA, data) if data else protocol.frame(protocol.EOF))
            if not data:
                inputs.remove(stdin)
        if winch is not None and winch[0] in ready:
            os.read(winch[0], 512)
            cols, rows = os.get_terminal_size(winch[1])
            conn.send(protocol.resize(rows, cols))


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


@contextlib.contextmanager
def _raw(fd: int) -> Iterator[None]:
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def _winch() -> Iterator[int]:
    """A pipe that becomes readable on every SIGWINCH."""
    r, w = os.pipe()
    os.set_blocking(w, False)

    def on_winch(signum: int, frame: object) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(w, b"w")

    old = signal.signal(signal.SIGWINCH, on_winch)
    try:
        yield r
    finally:
        signal.signal(signal.SIGWINCH, old)
        os.close(r)
        os.close(w)
