"""An LB's configuration as pure functions: listener records in, daemon configuration out.

The same rendering serves the ``local`` platform (the provider writes the
files into an LB namespace) and ``cloudlet lb-agent`` on a real LB VM, so
what the tests validate with the real binaries is what an LB runs.
"""

from cloudlet.lb.render import (
    NGINX_STREAM_MODULE,
    Backend,
    LbConfig,
    Listener,
    RuntimePaths,
    Vrrp,
    daemons,
    haproxy_argv,
    haproxy_check_argv,
    haproxy_config,
    keepalived_argv,
    keepalived_check_argv,
    keepalived_config,
    nginx_argv,
    nginx_check_argv,
    nginx_stream_config,
    runtime_paths,
    section_name,
)

__all__ = [
    "NGINX_STREAM_MODULE",
    "Backend",
    "LbConfig",
    "Listener",
    "RuntimePaths",
    "Vrrp",
    "daemons",
    "haproxy_argv",
    "haproxy_check_argv",
    "haproxy_config",
    "keepalived_argv",
    "keepalived_check_argv",
    "keepalived_config",
    "nginx_argv",
    "nginx_check_argv",
    "nginx_stream_config",
    "runtime_paths",
    "section_name",
]
