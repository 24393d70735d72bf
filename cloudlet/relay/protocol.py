"""The relay's wire protocol: shell and log sessions to back-end VMs that
accept no inbound connection (the architecture's EdgeTurn).

Both sides dial out to the relay (``cloudlet relay``), over TLS, sites with
a client certificate (``siteauth.py``), users with a token; the relay
splices a user's connection to one the site opens for it, and never reads
what flows between them once spliced.

Every connection opens with one JSON line from the dialer and one JSON line
answer from the relay (``{"ok": true}`` or ``{"ok": false, "error": "..."}``,
the error one line, after which the relay closes)::

    site control   -> {"role": "site", "site": ID, "cloudlets": [NAME, ...]}
                   <- {"ok": true, "refused": [NAME, ...]}   (names its certificate
                      does not grant, not served; the key only when there are some)
                   then, relay -> site, one line per session to open:
                      {"open": SID, "cloudlet", "vm", "kind", "cmd", "tty", "rows", "cols",
                       "follow", "term"}
                   and, site -> relay, every HEARTBEAT s: {"cloudlets": [NAME, ...]}
                      (the names it serves now; a silent site is dropped after 3 beats;
                      a name its certificate does not grant is refused, unanswered)
    site data      -> {"role": "data", "session": SID}     (dialled per "open")
                   <- {"ok": true}
    user           -> {"role": "user", "token", "cloudlet", "vm", "kind", "cmd",
                       "tty", "rows", "cols", "follow"}
                   <- {"ok": true, "session": SID}  once the site's data connection came

``kind`` is ``shell`` (``cmd``: an argv, empty for a login shell; ``tty``:
run under a pseudo-terminal of ``rows`` x ``cols``) or ``logs`` (the VM's
back-end log; ``follow``: keep sending what is appended).

After the answer, user and site exchange frames end to end through the
relay: a type byte, a 4-byte big-endian length, the payload. User -> site:
``DATA`` (stdin), ``EOF`` (stdin closed), ``RESIZE`` (two 2-byte rows,
cols). Site -> user: ``DATA`` (stdout, or the pty's output), ``ERR``
(stderr), ``EXIT`` (4-byte signed status; the site closes after it).
Either side closing ends the session: the relay closes the other.
"""

from __future__ import annotations

import json
import select
import socket
import ssl
import struct
import time
from typing import Any

from cloudlet.errors import CloudletError

DATA, EOF, RESIZE, ERR, EXIT = b"D", b"E", b"R", b"O", b"X"
HEADER = struct.Struct(">cI")
#: Largest frame payload a reader accepts (a writer sends at most CHUNK).
MAX_FRAME = 1 << 20
CHUNK = 16384
#: Largest hello line (a token and an argv fit well inside).
MAX_LINE = 65536
#: Seconds between a site's heartbeats.
HEARTBEAT = 5.0
#: Seconds a dialler waits for the relay's answer (the relay waits 10 for a site).
OPEN_WAIT = 15.0
KINDS = ("shell", "logs")


class ProtocolError(Exception):
    """The peer sent something this protocol does not allow."""


def line(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


def parse_line(raw: bytes) -> dict[str, Any]:
    if not raw.endswith(b"\n"):
        raise ProtocolError("connection closed before a complete line")
    try:
        doc = json.loads(raw)
    except ValueError:
        raise ProtocolError("not a JSON line") from None
    if not isinstance(doc, dict):
        raise ProtocolError("not a JSON object")
    return doc


class Conn:
    """A blocking (TLS) socket read through a buffer, from one thread: lines
    for the hellos, frames after. One thread both reads and writes it (an
    SSL object is not to be used by two threads at once), so a reader
    waits with ``select`` on ``fileno()`` and calls ``fill`` when it is
    readable; ``fill`` also drains what TLS already decrypted (``pending``),
    which ``select`` cannot see."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        #: The relay's answer to this connection's hello (``dial``).
        self.answer: dict[str, Any] = {}

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def fill(self) -> bool:
        """Read what is there; False at the end of the stream."""
        data = self.sock.recv(CHUNK)
        if not data:
            return False
        self.buf += data
        pending = getattr(self.sock, "pending", None)
        while pending is not None and pending():
            self.buf += self.sock.recv(pending())
        if len(self.buf) > MAX_FRAME + MAX_LINE:
            raise ProtocolError("peer sent more than a frame without being read")
        return True

    def has_data(self) -> bool:
        """Bytes buffered or decrypted, not yet taken: read before ``select``."""
        pending = getattr(self.sock, "pending", None)
        return bool(pending is not None and pending())

    def take_line(self) -> dict[str, Any] | None:
        at = self.buf.find(b"\n")
        if at < 0:
            if len(self.buf) > MAX_LINE:
                raise ProtocolError("line too long")
            return None
        raw, self.buf = self.buf[: at + 1], self.buf[at + 1 :]
        return parse_line(raw)

    def take_frame(self) -> tuple[bytes, bytes] | None:
        if len(self.buf) < HEADER.size:
            return None
        kind, size = HEADER.unpack(self.buf[: HEADER.size])
        if size > MAX_FRAME:
            raise ProtocolError(f"frame of {size} bytes")
        if len(self.buf) < HEADER.size + size:
            return None
        payload = self.buf[HEADER.size : HEADER.size + size]
        self.buf = self.buf[HEADER.size + size :]
        return kind, payload

    def frames(self) -> list[tuple[bytes, bytes]]:
        out = []
        while (f := self.take_frame()) is not None:
            out.append(f)
        return out

    def read_line(self, timeout: float) -> dict[str, Any]:
        """The next line, waiting at most ``timeout`` seconds for it."""
        deadline = time.monotonic() + timeout
        while (doc := self.take_line()) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProtocolError("no answer in time")
            if not self.has_data() and not select.select([self], [], [], left)[0]:
                continue
            if not self.fill():
                raise ProtocolError("connection closed before a complete line")
        return doc


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


def resize(rows: int, cols: int) -> bytes:
    return frame(RESIZE, struct.pack(">HH", rows, cols))


def exit_frame(status: int) -> bytes:
    return frame(EXIT, struct.pack(">i", status))


def session_request(doc: dict[str, Any]) -> dict[str, Any]:
    """The session fields of a user's hello, checked: what the relay passes
    on to the site in its ``open`` line."""
    kind = doc.get("kind")
    if kind not in KINDS:
        raise ProtocolError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    cmd = doc.get("cmd") or []
    if not isinstance(cmd, list) or not all(isinstance(a, str) for a in cmd):
        raise ProtocolError("cmd must be a list of strings")
    for key in ("cloudlet", "vm"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise ProtocolError(f"{key} missing")
    return {
        "cloudlet": doc["cloudlet"],
        "vm": doc["vm"],
        "kind": kind,
        "cmd": cmd,
        "tty": bool(doc.get("tty")),
        "rows": int(doc.get("rows") or 24),
        "cols": int(doc.get("cols") or 80),
        "follow": bool(doc.get("follow")),
    }


def vm_id(vm: str) -> str:
    """A VM as the spec names it (``game``) or by id (``vm/game``): its id."""
    return vm if vm.startswith("vm/") else f"vm/{vm}"


def client_context(
    ca: str | None, cert: str | None = None, key: str | None = None
) -> ssl.SSLContext:
    """TLS to the relay: its certificate checked against ``ca`` (none: the
    system's); with ``cert``, this side's client certificate."""
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


def dial(address: tuple[str, int], ctx: ssl.SSLContext, hello: dict[str, Any]) -> Conn:
    """A TLS connection to the relay that said ok to ``hello``; the relay's
    refusal is a CloudletError with its one line."""
    raw = socket.create_connection(address, timeout=10)
    try:
        sock = ctx.wrap_socket(raw, server_hostname=address[0])
        sock.settimeout(None)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        conn = Conn(sock)
        conn.send(line(hello))
        answer = conn.read_line(OPEN_WAIT)
    except BaseException:
        raw.close()
        raise
    if not answer.get("ok"):
        conn.sock.close()
        raise CloudletError(f"relay refused: {answer.get('error', 'no reason given')}")
    conn.answer = answer
    return conn
