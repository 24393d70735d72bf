"""Connections to etcd for the etcd store: endpoints, TLS, auth, retries.

Kept apart from the store's key layout and locking because it is where the
client's habits are worked around. The client is etcd-sdk-python (import
``pyetcd``, the python-etcd3 API, synchronous), and:

- it locks a failed endpoint out for 300 s by default ("Trying to use a failed
  node"), which kept a restarted etcd unusable for 30 s and more. Each
  endpoint here gets a short ``time_retry``, and after any connection error
  its client is dropped: a fresh gRPC channel reconnects at once, where the
  old one would wait out gRPC's growing reconnect backoff;
- it never re-authenticates, so an expired auth token is one more reason to
  drop the client (a new one logs in again);
- it sends the auth token both as call credentials, which gRPC refuses on a
  plaintext channel, and as metadata, which suffices; so plaintext channels
  drop the former;
- its errors are bare (``ConnectionFailedError`` says "etcd connection
  failed"); the gRPC error behind them has the reason, and messages use it.

One client per endpoint, tried in turn, so a dead member costs one refused
connection and the next call goes to the next member.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import grpc
import pyetcd
from pyetcd import exceptions as etcd_errors

from cloudlet.errors import CloudletError, StoreUnavailable

T = TypeVar("T")
Client: TypeAlias = Any  # pyetcd's MultiEndpointEtcd3Client; pyetcd ships no types

# etcd holds a request that reached a leader which then died for its own
# request timeout (about 7 s) before answering; a 5 s budget failed such
# calls during every election (measured on a 3-member cluster). 10 s rides
# one out; CLOUDLET_ETCD_TIMEOUT overrides it.
DEFAULT_TIMEOUT_S = 10.0
ENDPOINT_RETRY_S = 0.5  # pyetcd's default of 300 s keeps a restarted etcd unusable
RETRY_PAUSE_S = (0.05, 0.5)  # first and longest pause between connection attempts
_RETRY_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.CANCELLED,  # a concurrent caller closed a broken channel
}
_RETRY_ERRORS = (
    etcd_errors.ConnectionFailedError,
    etcd_errors.ConnectionTimeoutError,
    etcd_errors.InternalServerError,
    etcd_errors.NoServerAvailableError,
)
# A client closed by another thread (after its own connection error) while
# this one was about to call through it (grpc: "Cannot invoke RPC: Channel
# closed!"), or locked out by pyetcd: raised before anything is sent.
_CLOSED_CLIENT = ("failed node", "closed channel", "channel closed")
# Failures that prove a request was not applied, so even a write may be retried.
_UNSENT = (
    *_CLOSED_CLIENT,
    "failed to connect",
    "connection refused",
    "invalid auth token",
    "no endpoint available",
)


def parse_endpoints(text: str) -> list[tuple[str, int]]:
    """``HOST:PORT[,HOST:PORT...]`` (``http(s)://`` and ``[v6]`` allowed)."""
    endpoints = []
    for raw in text.split(","):
        item = raw.strip().removeprefix("http://").removeprefix("https://").rstrip("/")
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise CloudletError(f"invalid etcd endpoint {raw.strip()!r}: expected HOST:PORT")
        endpoints.append((host, int(port)))
    return endpoints


def tls_credentials(
    ca_cert: str | None, cert: str | None, key: str | None, https: bool
) -> grpc.ChannelCredentials | None:
    """TLS for the channel: a CA (else the system's), and a client cert with its key."""
    if (cert is None) != (key is None):
        raise CloudletError("an etcd client certificate needs its key, and a key its certificate")
    if ca_cert is None and cert is None and not https:
        return None

    def read(path: str | None) -> bytes | None:
        try:
            return None if path is None else Path(path).read_bytes()
        except OSError as err:
            raise CloudletError(f"cannot read TLS file {path}: {err.strerror}") from None

    return grpc.ssl_channel_credentials(read(ca_cert), read(key), read(cert))


class EtcdConnection:
    """pyetcd clients for a list of endpoints, and calls with retries.

    The password stays in memory, to log in again; it is in no message.
    """

    def __init__(
        self,
        endpoints: str,
        *,
        user: str | None = None,
        password: str | None = None,
        ca_cert: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if (user is None) != (password is None):
            raise CloudletError("etcd authentication needs both a user and a password")
        self.endpoints = parse_endpoints(endpoints)
        self.user = user
        self._password = password
        self._creds = tls_credentials(ca_cert, cert, key, "https://" in endpoints)
        self.timeout = timeout
        self._clients: dict[int, Client] = {}
        self._current = 0
        self._guard = threading.Lock()
        self._closed = False
        self._own: set[Client] = set()  # from own_client, closed on close()
        # Why the last call gave up reaching etcd, until a call gets through:
        # meanwhile each call tries every endpoint once instead of waiting out
        # its own timeout (a sync's steps each did, and took minutes to fail).
        self._gone: str | None = None

    @property
    def where(self) -> str:
        return ",".join(f"{host}:{port}" for host, port in self.endpoints)

    def call(self, op: Callable[[Client], T], *, idempotent: bool = True) -> T:
        """Run ``op(client)``, retrying connection errors on the endpoints in
        turn until ``timeout``.

        A compare-and-swap is not idempotent: if etcd may have applied it
        before the connection broke, a retry would report our own write as a
        conflict, and guessing "it was ours" could hide somebody else's
        equal write (a lost update). So it is retried only when the request
        provably never reached etcd, and otherwise fails saying so.
        """
        deadline = time.monotonic() + self.timeout
        pause = RETRY_PAUSE_S[0]
        tries = len(self.endpoints) if self._gone is not None else None
        while True:
            index, client = self._current, None
            try:
                index, client = self._client()
                result = op(client)
                self._gone = None
                return result
            except (*_RETRY_ERRORS, grpc.RpcError, ValueError) as exc:
                detail = _retryable(exc)
                if detail is None:
                    raise self._refused(exc) from None
                self._drop(index, client)
                if not idempotent and not any(s in detail.lower() for s in _UNSENT):
                    raise CloudletError(
                        f"etcd at {self.where} did not confirm a write ({detail}); "
                        "it may or may not have been applied"
                    ) from None
                remaining = deadline - time.monotonic()
                tries = None if tries is None else tries - 1
                if remaining <= 0 or tries == 0:
                    self._gone = detail
                    raise StoreUnavailable(f"cannot reach etcd at {self.where}: {detail}") from None
                time.sleep(min(pause, remaining))
                pause = min(pause * 2, RETRY_PAUSE_S[1])

    def close(self) -> None:
        with self._guard:
            self._closed = True
            clients, self._clients = [*self._clients.values(), *self._own], {}
            self._own = set()
        for client in clients:
            with contextlib.suppress(Exception):
                client.close()

    def __enter__(self) -> EtcdConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _client(self) -> tuple[int, Client]:
        with self._guard:
            if self._closed:
                raise RuntimeError(f"etcd store {self.where} is closed")
            index = self._current
            if index not in self._clients:
                # Built under the guard: authenticating twice would be harmless,
                # leaking the loser's channel would not.
                self._clients[index] = self._connect(*self.endpoints[index])
            return index, self._clients[index]

    def own_client(self) -> tuple[int, Client]:
        """A client nobody else uses, on the current endpoint; the caller closes it.

        For a long-lived watch stream: a pooled client's channel may be closed
        by any thread that hit a connection error on it, and a watch stream
        started on a channel being closed dies inside the client library's
        own thread, out of reach of any handler.
        """
        with self._guard:
            if self._closed:
                raise RuntimeError(f"etcd store {self.where} is closed")
            index = self._current
        client = self._connect(*self.endpoints[index])
        with self._guard:
            self._own.add(client)
        return index, client

    def release(self, client: Client) -> None:
        """Close a client from ``own_client``."""
        with self._guard:
            self._own.discard(client)
        with contextlib.suppress(Exception):
            client.close()

    @property
    def current(self) -> int:
        """The endpoint new clients go to."""
        return self._current

    def skip(self, index: int) -> None:
        """Endpoint ``index`` failed: the next new client tries the next one."""
        with self._guard:
            self._advance_from(index)

    def _advance_from(self, index: int) -> None:
        """(Under the guard.) Only once per failure of the current endpoint."""
        if index == self._current:
            self._current = (index + 1) % len(self.endpoints)

    def _connect(self, host: str, port: int) -> Client:
        secure = self._creds is not None
        endpoint = pyetcd.Endpoint(
            host, port, secure=secure, creds=self._creds, time_retry=ENDPOINT_RETRY_S
        )
        client = pyetcd.MultiEndpointEtcd3Client(
            [endpoint], timeout=self.timeout, user=self.user, password=self._password
        )
        if not secure:
            client.call_credentials = None  # the token goes as metadata
        return client

    def _drop(self, index: int, client: Client | None) -> None:
        """Forget ``client`` (None: it could not be built) after a connection
        error, and move to the next endpoint.

        Only if it is still the current one: when several threads fail on one
        dead member, the first moves on and the others must neither close the
        fresh client built since nor skip a second endpoint.
        """
        with self._guard:
            if client is not None:
                if self._clients.get(index) is not client:
                    return
                del self._clients[index]
            self._advance_from(index)
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def _refused(self, exc: Exception) -> Exception:
        if isinstance(exc, ValueError):  # the client refused before sending
            return CloudletError(f"etcd client for {self.where} failed: {exc}")
        if not isinstance(exc, grpc.RpcError):
            return exc
        who = f" (user {self.user})" if self.user else ""
        return CloudletError(f"etcd at {self.where}{who} refused the request: {_details(exc)}")


def _details(exc: BaseException) -> str:
    """One line: gRPC's details rather than its multi-line repr."""
    details = getattr(exc, "details", None)
    text = details() if callable(details) else str(exc)
    return " ".join(str(text or exc.__class__.__name__).split())


def _retryable(exc: BaseException) -> str | None:
    """Why ``exc`` is worth another endpoint or attempt, or None if it is not.

    pyetcd turns gRPC errors into bare exceptions; the gRPC one, with the
    useful text ("Connection refused"), is their ``__context__``.
    """
    cause = exc.__context__ if isinstance(exc, _RETRY_ERRORS) else exc
    if isinstance(exc, _RETRY_ERRORS) and not isinstance(cause, grpc.RpcError):
        return _details(exc)
    if isinstance(cause, grpc.RpcError):
        code = cause.code()
        expired = code == grpc.StatusCode.UNAUTHENTICATED and "token" in _details(cause)
        return _details(cause) if code in _RETRY_CODES or expired else None
    text = str(exc)
    return text if any(s in text.lower() for s in _CLOSED_CLIENT) else None
