"""vSphere's gateway: nginx's ``stream`` module passing vCenter's TLS through, untouched.

vCenter's SDK is HTTPS, and the engine verifies vCenter's certificate. An HTTP proxy in the
middle would have to terminate that TLS with a certificate of its own, so the engine would
verify the gateway instead of vCenter. A TCP relay does not: the engine's TLS session ends at
vCenter, and what the gateway sees is bytes (and, for its log, the name the engine asks for in
the TLS ClientHello, read with ``ssl_preread``; nothing is decrypted). The engine dials the
gateway's address but verifies the certificate against vCenter's own name (the endpoint URL's
host, sent as SNI too): ``providers/vsphere/connection.py``.

One ``server`` per endpoint on its own port of the gateway's address (vSphere has one, ``sdk``),
forwarding to that endpoint's host and port and nowhere else; with ``clients`` set, other
sources are refused.
"""

from __future__ import annotations

from collections.abc import Sequence

from cloudlet.model import gateway as gw
from cloudlet.model.spec import Gateway
from cloudlet.providers.nginxconf import RUN_DIR, allow_only, main_context

#: Debian's, Fedora's and nginx.org's packages build ``stream`` as a dynamic module, found
#: at this path relative to nginx's prefix (the line their own modules-enabled file has).
STREAM_MODULE = "modules/ngx_stream_module.so"
#: Longer than pyVmomi keeps an idle pooled connection (900 s): the gateway never cuts one
#: the engine would then reuse and see fail.
IDLE_TIMEOUT = "20m"


def _server(gateway: Gateway, endpoint: gw.Endpoint) -> list[str]:
    port = gw.listen_port(gateway, endpoint)
    return [
        f"    # {endpoint.service}: {endpoint.scheme}://{gw.host_in_url(gateway.address)}:{port}"
        f"{endpoint.path} -> {endpoint.upstream}{endpoint.path}",
        "    server {",
        f"        listen {gw.host_in_url(gateway.address)}:{port};",
        *allow_only(gateway.clients, " " * 8),
        *(["        ssl_preread on;  # the SNI, for the log only"] * (endpoint.scheme == "https")),
        f"        proxy_pass {gw.host_in_url(endpoint.host)}:{endpoint.port};",
        "    }",
    ]


def render_stream(
    gateway: Gateway,
    sites: Sequence[str] = (),
    run_dir: str = RUN_DIR,
    stream_module: str | None = STREAM_MODULE,
) -> str:
    """The whole ``nginx.conf`` for a vSphere site (nginx in the foreground: ``nginx -c FILE``).

    ``stream_module`` is the ``load_module`` path, None for an nginx with ``stream`` built in.
    Its access log has a line per connection (when it closes): the client, the service, the
    SNI, bytes each way and how long it lasted.
    """
    endpoints = gw.endpoints(gateway)
    services = [f"        {gw.listen_port(gateway, e)} {e.service};" for e in endpoints]
    head = [
        *main_context(sites, run_dir, [stream_module] if stream_module else []),
        "stream {",
        "    map $server_port $service {",
        *services,
        "    }",
        "    log_format gateway '$remote_addr -> $service:$server_port"
        ' sni="$ssl_preread_server_name" \'',
        "                       '$status $bytes_received>$bytes_sent ${session_time}s"
        " upstream $upstream_addr';",
        "    access_log /dev/stderr gateway;",
        "    proxy_connect_timeout 10s;",
        f"    proxy_timeout {IDLE_TIMEOUT};",
    ]
    body = [line for e in endpoints for line in ["", *_server(gateway, e)]]
    return "\n".join([*head, *body, "}", ""])
