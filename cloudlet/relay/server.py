"""``cloudlet relay``: the service both sides dial out to (``protocol.py``).

One asyncio loop holds every connection. A site's control connection
registers the cloudlets it serves; a user's connection is checked (its
token, through the store: ``tokens.py``), then the relay asks the site
serving that cloudlet to dial a data connection for a fresh session id,
pairs the two and splices bytes both ways, counting them. Every session is
audited: a record under ``/cloudlet/audit/<name>/`` at its start and again
at its end, and one log line at the end (token id, cloudlet, VM, kind,
start, end, bytes each way). Refusals are one line to the user and a log
line here.

The relay keeps nothing but connections: restarted, it is empty until the
sites reconnect (they retry with backoff), and a session cut by the restart
is over; tokens and audit live in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs

from cloudlet.relay import protocol, tokens
from cloudlet.store.base import Store
from cloudlet.store.records import AUDIT, encode

log = logging.getLogger("cloudlet.relay")

#: Seconds a user waits for the site's data connection.
OPEN_TIMEOUT = 10.0
#: Seconds a dialler has to send its hello line.
HELLO_TIMEOUT = 10.0
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def server_context(cert: str, key: str, site_ca: str | None = None) -> ssl.SSLContext:
    """The relay's TLS: its certificate; with ``site_ca``, sites must also
    present a client certificate that CA signed (users need none)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if site_ca is not None:
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(site_ca)
    return ctx


@attrs.define(eq=False)
class SiteLink:
    """A site's control connection and the cloudlets it serves."""

    id: str
    writer: asyncio.StreamWriter
    cloudlets: set[str]

    async def send(self, doc: dict[str, Any]) -> None:
        self.writer.write(protocol.line(doc))
        await self.writer.drain()


@attrs.define(eq=False)
class Session:
    id: str
    token: tokens.Token
    request: dict[str, Any]
    peer: str
    site: str
    start: float
    end: float | None = None
    up: int = 0  # user -> site
    down: int = 0  # site -> user
    outcome: str = "open"

    def record(self) -> dict[str, Any]:
        req = self.request
        return {
            "session": self.id,
            "token": self.token.id,
            "cloudlet": req["cloudlet"],
            "vm": req["vm"],
            "kind": req["kind"],
            "cmd": req["cmd"],
            "peer": self.peer,
            "site": self.site,
            "start": self.start,
            "end": self.end,
            "bytesUp": self.up,
            "bytesDown": self.down,
            "outcome": self.outcome,
        }


class Relay:
    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        require_site_cert: bool = False,
    ) -> None:
        self.store = store
        self.clock = clock
        self.require_site_cert = require_site_cert
        self.sites: dict[str, SiteLink] = {}  # cloudlet -> the site serving it
        self.pending: dict[str, asyncio.Future[tuple[Streams, asyncio.Event]]] = {}
        self._io = ThreadPoolExecutor(1, thread_name_prefix="relay-store")

    async def _store(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._io, lambda: fn(*args, **kw))

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = writer.get_extra_info("peername")[:2]
        peer = f"{host}:{port}"
        try:
            raw = await asyncio.wait_for(reader.readline(), HELLO_TIMEOUT)
            hello = protocol.parse_line(raw)
            role = hello.get("role")
            site_role = role in ("site", "data")
            if site_role and self.require_site_cert and not writer.get_extra_info("peercert"):
                raise protocol.ProtocolError("a site must present a client certificate")
            if role == "site":
                await self._site(hello, reader, writer, peer)
            elif role == "data":
                await self._data(hello, reader, writer)
            elif role == "user":
                await self._user(hello, reader, writer, peer)
            else:
                raise protocol.ProtocolError(f"unknown role {role!r}")
        except (protocol.ProtocolError, tokens.TokenRefused, LookupError) as err:
            log.warning("refused %s: %s", peer, err, extra={"peer": peer})
            await _refuse(writer, str(err))
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as err:
            log.debug("connection from %s ended: %r", peer, err)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # -- the site side -------------------------------------------------------

    async def _site(
        self, hello: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        peer: str,
    ) -> None:  # fmt: skip
        link = SiteLink(str(hello.get("site") or peer), writer, set())
        self._serve(link, hello.get("cloudlets"))
        await link.send({"ok": True})
        log.info("site %s connected from %s: %s", link.id, peer, sorted(link.cloudlets))
        try:
            while True:
                raw = await asyncio.wait_for(reader.readline(), 3 * protocol.HEARTBEAT)
                if not raw:
                    break
                self._serve(link, protocol.parse_line(raw).get("cloudlets"))
        finally:
            for name in [n for n, s in self.sites.items() if s is link]:
                del self.sites[name]
            log.info("site %s disconnected", link.id)

    def _serve(self, link: SiteLink, names: object) -> None:
        wanted = {n for n in names if isinstance(n, str)} if isinstance(names, list) else set()
        for name in link.cloudlets - wanted:
            if self.sites.get(name) is link:
                del self.sites[name]
        for name in wanted:
            self.sites[name] = link  # the latest site to claim a cloudlet serves it
        link.cloudlets = wanted

    async def _data(
        self, hello: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        waiting = self.pending.pop(str(hello.get("session")), None)
        if waiting is None or waiting.done():
            raise LookupError("no session waits for this connection")
        writer.write(protocol.line({"ok": True}))
        await writer.drain()
        done = asyncio.Event()
        waiting.set_result(((reader, writer), done))
        await done.wait()  # the user's handler splices, then sets it

    # -- the user side -------------------------------------------------------

    async def _user(
        self, hello: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        peer: str,
    ) -> None:  # fmt: skip
        request = protocol.session_request(hello)
        request["vm"] = protocol.vm_id(request["vm"])
        token = await self._store(
            tokens.check, self.store, str(hello.get("token") or ""),
            request["cloudlet"], request["vm"], now=self.clock(),
        )  # fmt: skip
        site = self.sites.get(request["cloudlet"])
        if site is None:
            raise LookupError(f"no site is connected for cloudlet {request['cloudlet']}")
        session = Session(secrets.token_hex(16), token, request, peer, site.id, self.clock())
        (site_reader, site_writer), done = await self._open(site, session)
        try:
            writer.write(protocol.line({"ok": True, "session": session.id}))
            await writer.drain()
            await self._store(self._audit, session)
            await self._splice(session, (reader, writer), (site_reader, site_writer))
        finally:
            site_writer.close()
            done.set()
            session.end = self.clock()
            await self._store(self._audit, session)
            _log_end(session)

    async def _open(self, site: SiteLink, session: Session) -> tuple[Streams, asyncio.Event]:
        future: asyncio.Future[tuple[Streams, asyncio.Event]] = (
            asyncio.get_running_loop().create_future()
        )
        self.pending[session.id] = future
        try:
            await site.send({"open": session.id, **session.request})
            return await asyncio.wait_for(future, OPEN_TIMEOUT)
        except (TimeoutError, OSError):
            raise LookupError(
                f"the site of {session.request['cloudlet']} did not open the session"
            ) from None
        finally:
            self.pending.pop(session.id, None)

    async def _splice(self, session: Session, user: Streams, site: Streams) -> None:
        def up(n: int) -> None:
            session.up += n

        def down(n: int) -> None:
            session.down += n

        pumps = [
            asyncio.create_task(_pump(user[0], site[1], up)),
            asyncio.create_task(_pump(site[0], user[1], down)),
        ]
        finished, rest = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in rest:
            task.cancel()
        session.outcome = "closed by user" if pumps[0] in finished else "ended"

    def _audit(self, session: Session) -> None:
        name = session.request["cloudlet"]
        key = f"{AUDIT}{name}/{session.start:017.6f}-{session.id[:12]}"
        self.store.put(key, encode(session.record()))

    def purge(self) -> None:
        tokens.purge_expired(self.store, now=self.clock())


def _log_end(session: Session) -> None:
    rec = session.record()
    log.info(
        "session %s token %s %s %s %s: %.1f s, %d bytes up, %d down (%s)",
        session.id[:12], session.token.id, rec["cloudlet"], rec["vm"], rec["kind"],
        (session.end or session.start) - session.start, session.up, session.down,
        session.outcome, extra={"audit": rec},
    )  # fmt: skip


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: Callable[[int], None]
) -> None:
    with contextlib.suppress(OSError, ConnectionError):
        while data := await reader.read(protocol.CHUNK):
            count(len(data))
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(Exception):
        await writer.drain()


async def _refuse(writer: asyncio.StreamWriter, why: str) -> None:
    with contextlib.suppress(Exception):
        writer.write(protocol.line({"ok": False, "error": why}))
        await writer.drain()


async def serve(relay: Relay, host: str, port: int, ctx: ssl.SSLContext) -> None:
    """Serve until cancelled; purge expired tokens every minute."""
    server = await asyncio.start_server(relay.handle, host, port, ssl=ctx)
    log.info("relay listening on %s:%d (TLS)", host, port)
    async with server:
        while True:
            with contextlib.suppress(Exception):
                await relay._store(relay.purge)
            await asyncio.sleep(60)
