"""``cloudlet relay``: the service both sides dial out to (``protocol.py``).

One asyncio loop holds every connection. Each starts with the TLS
handshake, done here rather than by the server so a site certificate the
site CA did not sign is seen and audited (``siteauth.py``). A site's
control connection registers the cloudlets it serves, each one its
certificate names; a user's connection is checked (its token, through the
store: ``tokens.py``), then the relay asks the site serving that cloudlet
to dial a data connection for a fresh session id, uses the token up, pairs
the two and splices bytes both ways, counting them. Every session and
every refusal is audited (``audit.py``); a session also ends in one log
line (token id, cloudlet, VM, kind, duration, bytes each way), a refusal
in one line to the dialler and a warning here.

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

from cloudlet.relay import audit, protocol, siteauth, tokens
from cloudlet.relay.audit import Session
from cloudlet.store.base import Store

log = logging.getLogger("cloudlet.relay")

#: Seconds a user waits for the site's data connection.
OPEN_TIMEOUT = 10.0
#: Seconds a dialler has for the TLS handshake, and then to send its hello line.
HELLO_TIMEOUT = 10.0
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Refused(Exception):
    """A dialler the relay turns away: the line it is told, and what the
    audit record says about it (``audit.refusal``'s fields)."""

    def __init__(self, why: str, **audited: Any) -> None:
        super().__init__(why)
        self.audited = audited


@attrs.define(eq=False)
class SiteLink:
    """A site's control connection, the cloudlets it serves and those its
    certificate lets it serve (``grants`` None: any, the relay being run
    with unauthenticated sites)."""

    id: str
    writer: asyncio.StreamWriter
    cloudlets: set[str]
    grants: tuple[str, ...] | None = None
    cert: str | None = None
    refused: set[str] = attrs.field(factory=set)

    def may_serve(self, name: str) -> bool:
        return self.grants is None or siteauth.covers(self.grants, name)

    async def send(self, doc: dict[str, Any]) -> None:
        self.writer.write(protocol.line(doc))
        await self.writer.drain()


@attrs.frozen
class Peer:
    """Who dialled: the address, and the verified certificate if any."""

    address: str
    cert: dict[str, Any] | None

    @property
    def cert_name(self) -> str | None:
        return siteauth.subject(self.cert)


class Relay:
    def __init__(
        self,
        store: Store,
        tls: ssl.SSLContext,
        *,
        clock: Callable[[], float] = time.time,
        authenticate_sites: bool = True,
    ) -> None:
        self.store, self.tls, self.clock = store, tls, clock
        self.authenticate_sites = authenticate_sites
        self.sites: dict[str, SiteLink] = {}  # cloudlet -> the site serving it
        #: session id -> (its cloudlet, the user's handler waiting for the site's connection)
        self.pending: dict[str, tuple[str, asyncio.Future[tuple[Streams, asyncio.Event]]]] = {}
        self.cap = audit.RefusalCap()
        self._io = ThreadPoolExecutor(1, thread_name_prefix="relay-store")

    async def _store(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._io, lambda: fn(*args, **kw))

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = writer.get_extra_info("peername")[:2]
        address = f"{host}:{port}"
        hello: dict[str, Any] = {}
        peer = Peer(address, None)
        try:
            if (tls := await self._handshake(writer, address)) is None:
                return
            peer = tls
            raw = await asyncio.wait_for(reader.readline(), HELLO_TIMEOUT)
            if not raw:
                return  # closed without a word: a probe, nothing was asked
            hello = protocol.parse_line(raw)
            await self._dispatch(hello, reader, writer, peer)
        except (protocol.ProtocolError, tokens.TokenRefused, Refused) as err:
            audited = err.audited if isinstance(err, Refused) else {}
            await self._refused(peer, _role(hello), str(err), hello, **audited)
            await _refuse(writer, str(err))
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as err:
            log.debug("connection from %s ended: %r", address, err)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _handshake(self, writer: asyncio.StreamWriter, address: str) -> Peer | None:
        """TLS on the new connection; None if it failed (a certificate the
        site CA did not sign is audited: no line can be sent without TLS)."""
        try:
            await writer.start_tls(self.tls, ssl_handshake_timeout=HELLO_TIMEOUT)
        except (OSError, TimeoutError) as err:  # ssl.SSLError is an OSError
            why = siteauth.handshake_refusal(err)
            if why is None:
                log.debug("TLS handshake with %s failed: %s", address, err)
            else:
                await self._refused(Peer(address, None), "site", why, {})
            return None
        return Peer(address, writer.get_extra_info("peercert") or None)

    async def _dispatch(
        self, hello: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        peer: Peer,
    ) -> None:  # fmt: skip
        role = hello.get("role")
        if role in ("site", "data") and self.authenticate_sites and not peer.cert:
            raise Refused(
                "a site must present a client certificate signed by the relay's --site-ca"
            )
        if role == "site":
            await self._site(hello, reader, writer, peer)
        elif role == "data":
            await self._data(hello, reader, writer, peer)
        elif role == "user":
            await self._user(hello, reader, writer, peer)
        else:
            raise protocol.ProtocolError(f"unknown role {role!r}")

    async def _refused(
        self, peer: Peer, role: str, why: str, hello: dict[str, Any], **audited: Any
    ) -> None:
        """Log and audit one refusal (the audit capped: ``audit.RefusalCap``)."""
        log.warning("refused %s (%s): %s", peer.address, role, why, extra={"peer": peer.address})
        now = self.clock()
        rec = audit.refusal(
            at=now, role=role, peer=peer.address, reason=why, hello=hello,
            site_cert=peer.cert_name, **audited,
        )  # fmt: skip
        if self.cap.admit(rec, now):
            try:
                await self._store(audit.write_refusal, self.store, rec)
            except Exception as err:  # the store down: the refusal stands, the log has it
                log.error("refusal of %s not audited: %s", peer.address, err)

    # -- the site side -------------------------------------------------------

    async def _site(
        self, hello: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        peer: Peer,
    ) -> None:  # fmt: skip
        grants = siteauth.grants(peer.cert) if self.authenticate_sites else None
        if grants == ():
            raise Refused(
                f"the site certificate names no cloudlet (a subjectAltName URI "
                f"{siteauth.SCHEME}NAME)"
            )
        link = SiteLink(
            str(hello.get("site") or peer.address), writer, set(), grants, peer.cert_name
        )
        refused = await self._serve(link, hello.get("cloudlets"), peer)
        await link.send({"ok": True, **({"refused": sorted(refused)} if refused else {})})
        log.info("site %s connected from %s: %s", link.id, peer.address, sorted(link.cloudlets))
        try:
            while True:
                raw = await asyncio.wait_for(reader.readline(), 3 * protocol.HEARTBEAT)
                if not raw:
                    break
                await self._serve(link, protocol.parse_line(raw).get("cloudlets"), peer)
        finally:
            for name in [n for n, s in self.sites.items() if s is link]:
                del self.sites[name]
            log.info("site %s disconnected", link.id)

    async def _serve(self, link: SiteLink, names: object, peer: Peer) -> set[str]:
        """Let ``link`` serve the cloudlets ``names`` its certificate names;
        the others are refused (audited once per connection): which."""
        claimed = {n for n in names if isinstance(n, str)} if isinstance(names, list) else set()
        wanted = {n for n in claimed if link.may_serve(n)}
        for name in link.cloudlets - wanted:
            if self.sites.get(name) is link:
                del self.sites[name]
        for name in wanted:
            self.sites[name] = link  # the latest site to claim a cloudlet serves it
        link.cloudlets = wanted
        refused = claimed - wanted
        for name in sorted(refused - link.refused):
            why = f"site {link.id}: its certificate does not name cloudlet {name}"
            await self._refused(peer, "site", why, {"site": link.id}, cloudlet=name)
        link.refused |= refused
        return refused

    async def _data(
        self, hello: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        peer: Peer,
    ) -> None:  # fmt: skip
        sid = str(hello.get("session"))
        cloudlet, waiting = self.pending.get(sid, ("", None))
        if waiting is None or waiting.done():
            raise Refused("no session waits for this connection")
        if self.authenticate_sites and not siteauth.covers(siteauth.grants(peer.cert), cloudlet):
            raise Refused(
                f"the site certificate does not name cloudlet {cloudlet}", cloudlet=cloudlet
            )
        del self.pending[sid]
        writer.write(protocol.line({"ok": True}))
        await writer.drain()
        done = asyncio.Event()
        waiting.set_result(((reader, writer), done))
        await done.wait()  # the user's handler splices, then sets it

    # -- the user side -------------------------------------------------------

    async def _user(
        self, hello: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        peer: Peer,
    ) -> None:  # fmt: skip
        request = protocol.session_request(hello)
        request["vm"] = hello["vm"] = protocol.vm_id(request["vm"])  # the audit says vm/NAME too
        asked = (self.store, str(hello.get("token") or ""), request["cloudlet"], request["vm"])
        await self._store(tokens.check, *asked, now=self.clock())  # before saying what is served
        site = self.sites.get(request["cloudlet"])
        if site is None:
            raise Refused(f"no site is connected for cloudlet {request['cloudlet']}")
        token = await self._store(tokens.use, *asked, now=self.clock())
        session = Session(
            secrets.token_hex(16), token, request, peer.address, site.id, self.clock(), site.cert
        )
        try:
            (site_reader, site_writer), done = await self._open(site, session)
        except Refused:
            await self._store(tokens.give_back, self.store, token)  # no session came of it
            raise
        try:
            writer.write(protocol.line({"ok": True, "session": session.id}))
            await writer.drain()
            await self._store(audit.write_session, self.store, session)
            await self._splice(session, (reader, writer), (site_reader, site_writer))
        finally:
            site_writer.close()
            done.set()
            session.end = self.clock()
            await self._store(audit.write_session, self.store, session)
            _log_end(session)

    async def _open(self, site: SiteLink, session: Session) -> tuple[Streams, asyncio.Event]:
        future: asyncio.Future[tuple[Streams, asyncio.Event]] = (
            asyncio.get_running_loop().create_future()
        )
        self.pending[session.id] = (session.request["cloudlet"], future)
        try:
            await site.send({"open": session.id, **session.request})
            return await asyncio.wait_for(future, OPEN_TIMEOUT)
        except (TimeoutError, OSError):
            raise Refused(
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

    def purge(self) -> None:
        tokens.purge_expired(self.store, now=self.clock())


def _role(hello: dict[str, Any]) -> str:
    role = hello.get("role")
    return role[:20] if isinstance(role, str) else "unknown"


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


async def serve(relay: Relay, host: str, port: int) -> None:
    """Serve until cancelled (TLS per connection: ``Relay.handle``); purge
    expired tokens every minute."""
    server = await asyncio.start_server(relay.handle, host, port)
    log.info("relay listening on %s:%d (TLS)", host, port)
    if not relay.authenticate_sites:
        log.warning(
            "sites are not authenticated (--insecure-unauthenticated-sites): anyone who "
            "reaches this relay can register as a site and receive users' sessions"
        )
    async with server:
        while True:
            with contextlib.suppress(Exception):
                await relay._store(relay.purge)
            await asyncio.sleep(60)
