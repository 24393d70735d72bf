"""One logged-in vCenter session, shared by the engine's worker threads.

pyVmomi's stub keeps a pool of HTTP connections and is safe to share across
threads; what is not shared is the login, which happens lazily (so building
a provider never touches the network) and again when vCenter reports the
session expired (``NotAuthenticated``), as it does after idle time.

Through a gateway (``Endpoint.via``) pyVmomi dials the gateway's address, and the TLS
session, passed through by the gateway, ends at vCenter: the certificate is checked against
vCenter's own name, which is also the SNI (``_NamedContext``), as if dialled directly.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
from typing import Any

from cloudlet.providers.vsphere.config import Endpoint
from cloudlet.providers.vsphere.faults import translated
from cloudlet.providers.vsphere.sdk import Disconnect, SmartConnect

#: Seconds before a silent vCenter counts as a broken connection.
HTTP_TIMEOUT = 120


class _NamedContext(ssl.SSLContext):
    """A client context that names ``server_name`` whatever host the socket was dialled to:
    http.client passes the host it connected to (the gateway's address) as SNI and as the
    name to verify, and vCenter's certificate names vCenter."""

    server_name: str

    def wrap_socket(self, sock: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["server_hostname"] = self.server_name
        return super().wrap_socket(sock, *args, **kwargs)


def _via_context(e: Endpoint) -> ssl.SSLContext:
    """The TLS context through a gateway: verified as ``create_default_context`` would (the
    CA file, else the system's), or not at all with ``insecure``; vCenter's name either way."""
    context = _NamedContext(ssl.PROTOCOL_TLS_CLIENT)
    context.server_name = e.host
    if e.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif e.ca_file:
        context.load_verify_locations(cafile=e.ca_file)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    return context


def _target(e: Endpoint) -> tuple[str, int, dict[str, Any], str]:
    """Where pyVmomi dials, its TLS options, and how a failure names the place."""
    options: dict[str, Any] = {}
    if e.via is not None:
        host, port = e.via
        if e.protocol == "https":
            options["sslContext"] = _via_context(e)
        return host, port, options, f"{e.host}:{e.port} via the gateway {host}:{port}"
    if e.protocol == "https" and e.insecure:
        options["disableSslCertValidation"] = True
    elif e.protocol == "https":
        # Verify even on loopback, where pyVmomi would silently skip it.
        options["sslContext"] = ssl.create_default_context(cafile=e.ca_file)
    return e.host, e.port, options, f"{e.host}:{e.port}"


class Connection:
    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        self._lock = threading.Lock()
        self._si: Any = None
        self._content: Any = None
        #: Bumped by every fresh login: references from before are stale.
        self.generation = 0

    @property
    def content(self) -> Any:
        """The ServiceContent (root folder, collectors, managers), logging in if needed."""
        with self._lock:
            if self._content is None:
                self._login()
            return self._content

    @property
    def stub(self) -> Any:
        """What pyVmomi binds managed object references to."""
        _ = self.content
        return self._si._stub

    def _login(self) -> None:
        e = self._endpoint
        host, port, options, where = _target(e)
        with translated(f"vsphere: login to {where}"):
            self._si = SmartConnect(
                protocol=e.protocol,
                host=host,
                port=port,
                path=e.path,
                user=e.user,
                pwd=e.password,
                httpConnectionTimeout=HTTP_TIMEOUT,
                **options,
            )
            self._content = self._si.RetrieveContent()
            self.generation += 1

    def relogin(self) -> bool:
        """Log in again on the same stub, keeping every reference bound to it.

        Returns False when that failed and the connection was dropped instead:
        the next use connects afresh, and references bound to the old stub
        must be looked up again.
        """
        with self._lock:
            if self._content is None:
                return False
            e = self._endpoint
            try:
                self._content.sessionManager.Login(e.user, e.password)
                return True
            except Exception:  # a dead connection or a changed password: start over
                self._drop()
                return False

    def _drop(self) -> None:
        si, self._si, self._content = self._si, None, None
        if si is not None:
            # A session that is already dead has nothing to log out of.
            with contextlib.suppress(Exception):
                Disconnect(si)

    def close(self) -> None:
        with self._lock:
            self._drop()
