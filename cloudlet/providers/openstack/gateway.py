"""The gateway's nginx configuration, and the engine's URLs through it: pure functions of
``platform.gateway``.

An isolated orchestrator network is one the engine cannot reach but through a gateway. The
gateway here is one nginx: a ``server`` per endpoint on its own port of the gateway's address,
forwarding everything it receives to that endpoint's internal URL and nothing anywhere else (no
other port is listened on; with ``clients`` set, other sources are refused). The client's Host
header is passed on, so services that build links from it (keystone's and nova's version
documents) point back at the gateway; the service catalogue does not, which is why the provider
overrides every endpoint it uses (``endpoint_overrides``).
"""

from __future__ import annotations

from collections.abc import Sequence

from cloudlet.model import gateway as gw
from cloudlet.model.spec import Gateway
from cloudlet.providers.nginxconf import RUN_DIR, allow_only, main_context

TEMP_KINDS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def auth_url(gateway: Gateway) -> str:
    """Keystone through the gateway: the ``auth_url`` the provider authenticates at."""
    (identity,) = [e for e in gw.endpoints(gateway) if e.service == "identity"]
    return gw.gateway_url(gateway, identity)


def endpoint_overrides(gateway: Gateway) -> dict[str, str]:
    """openstacksdk's ``<service>_endpoint_override`` options: each service the gateway
    forwards, at its gateway URL instead of the catalogue's internal one."""
    return {
        f"{e.service.replace('-', '_')}_endpoint_override": gw.gateway_url(gateway, e)
        for e in gw.endpoints(gateway)
    }


def _server(gateway: Gateway, endpoint: gw.Endpoint) -> list[str]:
    listen = f"{gw.host_in_url(gateway.address)}:{gw.listen_port(gateway, endpoint)}"
    lines = [
        f"    # {endpoint.service}: {gw.gateway_url(gateway, endpoint)} -> "
        f"{endpoint.upstream}{endpoint.path}",
        "    server {",
        f"        listen {listen};",
        f"        server_name {endpoint.service};",
        "        location / {",
        *allow_only(gateway.clients, " " * 12),
        f"            proxy_pass {endpoint.upstream};",
    ]
    if endpoint.scheme == "https":
        lines += [
            "            proxy_ssl_server_name on;",
            f"            proxy_ssl_name {endpoint.host};",
        ]
    return [*lines, "        }", "    }"]


def render_nginx(gateway: Gateway, sites: Sequence[str] = (), run_dir: str = RUN_DIR) -> str:
    """The whole ``nginx.conf`` (nginx runs in the foreground: ``nginx -c FILE``).

    ``sites`` names the cloudlets the gateway serves (a comment); ``run_dir`` holds the pid
    file and nginx's temporary files (it must exist and be writable by nginx).
    """
    head = [
        *main_context(sites, run_dir),
        "http {",
        "    log_format gateway '$remote_addr -> $server_name:$server_port \"$request\" '",
        "                       '$status $body_bytes_sent $request_time';",
        "    access_log /dev/stderr gateway;",
        *[f"    {kind}_temp_path {run_dir}/{kind};" for kind in TEMP_KINDS],
        "    server_tokens off;",
        "    client_max_body_size 0;  # image uploads",
        "    large_client_header_buffers 4 64k;  # tokens travel in headers",
        "    proxy_buffer_size 64k;",
        "    proxy_buffers 8 64k;",
        "    proxy_http_version 1.1;",
        "    proxy_read_timeout 300s;",
        "    proxy_request_buffering off;",
        "    proxy_set_header Host $http_host;  # links the services build point back here",
        '    proxy_set_header Connection "";',
        "    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "    proxy_set_header X-Forwarded-Proto $scheme;",
    ]
    body = [line for e in gw.endpoints(gateway) for line in ["", *_server(gateway, e)]]
    return "\n".join([*head, *body, "}", ""])
