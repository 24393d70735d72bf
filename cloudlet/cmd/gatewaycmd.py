"""``cloudlet export gateway``: the nginx configuration of a site's gateway.

The gateway stands between an isolated orchestrator network and the engine's: the spec's
``platform.gateway`` says what it forwards, and this renders it (no store, no cloud: the
configuration is a function of the file alone). OpenStack's is an HTTP proxy; vSphere's passes
vCenter's TLS through (``stream``), so the engine verifies vCenter itself.
"""

from __future__ import annotations

import argparse
import sys

from cloudlet.cmd.outfile import write_output
from cloudlet.errors import CloudletError


def cmd_export_gateway(args: argparse.Namespace) -> int:
    from cloudlet.model.load import load_file
    from cloudlet.providers.nginxconf import RUN_DIR
    from cloudlet.providers.openstack.gateway import render_nginx
    from cloudlet.providers.passthrough import STREAM_MODULE, render_stream

    cloudlets = load_file(args.file)
    served = [
        (c.name, c.spec.platform.type, c.spec.platform.gateway)
        for c in cloudlets
        if c.spec.platform.gateway
    ]
    if not served:
        raise CloudletError(
            f"{args.file}: no cloudlet has a platform.gateway (an openstack or vsphere "
            "platform's gateway: {address, endpoints}); nothing to render"
        )
    first_name, platform, gateway = served[0]
    for name, other_platform, other in served[1:]:
        if (other_platform, other) != (platform, gateway):
            raise CloudletError(
                f"{args.file}: cloudlets {first_name} and {name} name different gateways;"
                " render one site's file at a time"
            )
    sites, run_dir = [name for name, _, _ in served], args.run_dir or RUN_DIR
    module = args.stream_module
    if platform == "vsphere":
        stream_module = STREAM_MODULE if module is None else (None if module == "none" else module)
        text = render_stream(gateway, sites, run_dir, stream_module)
    elif module is not None:
        raise CloudletError("--stream-module applies to a vsphere platform's gateway only")
    else:
        text = render_nginx(gateway, sites, run_dir)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        write_output(args.output, text)
    return 0
