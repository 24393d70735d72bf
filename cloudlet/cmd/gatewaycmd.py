"""``cloudlet export gateway``: the nginx configuration of a site's gateway.

The gateway stands between an isolated orchestrator network and the engine's: the spec's
``platform.gateway`` says what it forwards, and this renders it (no store, no cloud: the
configuration is a function of the file alone).
"""

from __future__ import annotations

import argparse
import sys

from cloudlet.cmd.outfile import write_output
from cloudlet.errors import CloudletError


def cmd_export_gateway(args: argparse.Namespace) -> int:
    from cloudlet.model.load import load_file
    from cloudlet.providers.openstack.gateway import RUN_DIR, render_nginx

    cloudlets = load_file(args.file)
    served = [(c.name, c.spec.platform.gateway) for c in cloudlets if c.spec.platform.gateway]
    if not served:
        raise CloudletError(
            f"{args.file}: no cloudlet has a platform.gateway (an openstack platform's "
            "gateway: {address, endpoints}); nothing to render"
        )
    first_name, gateway = served[0]
    for name, other in served[1:]:
        if other != gateway:
            raise CloudletError(
                f"{args.file}: cloudlets {first_name} and {name} name different gateways;"
                " render one site's file at a time"
            )
    text = render_nginx(gateway, [name for name, _ in served], args.run_dir or RUN_DIR)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        write_output(args.output, text)
    return 0
