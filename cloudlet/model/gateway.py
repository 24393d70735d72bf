"""The gateway's endpoints, parsed: what validation checks and what the renderer and the
provider build on (one reading of ``platform.gateway`` for all three).

An endpoint is the orchestrator's own URL for one service, as its catalogue lists it
(``http://10.0.0.5:8774/v2.1``), or vCenter's SDK URL (``https://vc.internal/sdk``). The
gateway serves it on ``address:port`` (the URL's own port unless ``ports`` names another)
with the same path, so the engine's URL for a service is the internal one with only the
host and port swapped for the gateway's (and, on OpenStack, the scheme: see ``gateway_url``).
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse

import attrs

from cloudlet.model.spec import Gateway

#: OpenStack's service types the gateway forwards (Keystone's catalogue names). The engine
#: uses identity, compute, network and image; the others are for what an operator adds.
OPENSTACK_SERVICES = (
    "identity",
    "compute",
    "network",
    "image",
    "placement",
    "orchestration",
    "block-storage",
    "load-balancer",
    "dns",
    "object-store",
    "key-manager",
)
#: Service types by platform type. vSphere's one is vCenter's SDK endpoint: the provider
#: speaks SOAP to it and nothing else (no datastore file transfer, NFC lease or guest
#: operations URL, which vCenter would hand out with an ESXi host's name in them).
SERVICE_TYPES: dict[str, tuple[str, ...]] = {
    "openstack": OPENSTACK_SERVICES,
    "vsphere": ("sdk",),
}
#: The endpoint each platform type cannot do without, and what it is.
REQUIRED: dict[str, tuple[str, str]] = {
    "openstack": ("identity", "keystone"),
    "vsphere": ("sdk", "vCenter's https://HOST/sdk"),
}
KNOWN = frozenset(s for services in SERVICE_TYPES.values() for s in services)
DEFAULT_PORTS = {"http": 80, "https": 443}
LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOST_RE = re.compile(rf"(?=.{{1,253}}\Z){LABEL}(?:\.{LABEL})*")


@attrs.frozen
class Endpoint:
    """One service's internal URL, taken apart."""

    service: str
    scheme: str
    host: str  # IPv6 literals without brackets
    port: int
    path: str  # "" or starting with "/"

    @property
    def upstream(self) -> str:
        """``scheme://host:port``: where the gateway forwards to."""
        return f"{self.scheme}://{host_in_url(self.host)}:{self.port}"


def host_in_url(host: str) -> str:
    """A host as a URL or nginx ``listen`` spells it: IPv6 literals in brackets."""
    return f"[{host}]" if ":" in host else host


def host_problem(text: str) -> str | None:
    """Why ``text`` is neither an IP address nor a host name, or None."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        if HOST_RE.fullmatch(text):
            return None
        return f"not an IP address or host name: {text!r}"
    return None


def parse_endpoint(service: str, url: str) -> Endpoint | str:
    """The endpoint, or why ``url`` cannot be one (a message without the path)."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as err:
        return f"not a valid URL: {err}"
    if parts.scheme not in DEFAULT_PORTS:
        return f"must be an http:// or https:// URL, got {url!r}"
    if parts.username is not None or parts.password is not None:
        return "must not hold credentials (they live in clouds.yaml)"
    if parts.query or parts.fragment:
        return "must not have a query or fragment"
    host = parts.hostname or ""
    problem = host_problem(host) if host else f"has no host: {url!r}"
    if problem:
        return problem
    path = parts.path.rstrip("/")
    return Endpoint(service, parts.scheme, host, port or DEFAULT_PORTS[parts.scheme], path)


def endpoints(gateway: Gateway) -> list[Endpoint]:
    """The usable endpoints, by service type (validation reports the others, and those of
    another platform type)."""
    out = []
    for service in sorted(gateway.endpoints):
        if service not in KNOWN:
            continue
        parsed = parse_endpoint(service, gateway.endpoints[service])
        if isinstance(parsed, Endpoint):
            out.append(parsed)
    return out


def listen_port(gateway: Gateway, endpoint: Endpoint) -> int:
    """The gateway's port for one endpoint: the named one, else the internal URL's."""
    return gateway.ports.get(endpoint.service, endpoint.port)


def gateway_url(gateway: Gateway, endpoint: Endpoint) -> str:
    """The engine's URL for a service: the internal path, on the gateway's address and port."""
    return f"http://{host_in_url(gateway.address)}:{listen_port(gateway, endpoint)}{endpoint.path}"
