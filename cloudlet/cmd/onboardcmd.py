"""``cloudlet export onboard`` and ``export heat --platform-vm``: the shell
around :mod:`cloudlet.onboard` (reads the wheel and the unit, writes the file)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from cloudlet import __version__
from cloudlet.cmd.outfile import write_output
from cloudlet.errors import CloudletError

if TYPE_CHECKING:
    from cloudlet.onboard import Onboarding
    from cloudlet.providers.openstack.heat import PlatformVM


def add_flags(p: argparse.ArgumentParser) -> None:
    """The onboarding flags, on ``export`` (they are ``onboard``'s, and
    ``heat``'s with ``--platform-vm``)."""
    g = p.add_argument_group("onboarding (export onboard; export heat --platform-vm)")
    g.add_argument(
        "--version",
        dest="pin",
        default=__version__,
        metavar="V",
        help="the cloudlet release the VM installs, pinned as cloudlet==V",
    )
    g.add_argument(
        "--wheel",
        metavar="PATH",
        help="ship this cloudlet wheel inside the user data (its dependencies still come from"
        " --index or PyPI; too big for Nova's 64 KiB user data: use --index there)",
    )
    g.add_argument(
        "--index", metavar="URL", help="the package index pip installs from (the site's mirror)"
    )
    g.add_argument(
        "--etcd",
        dest="vm_etcd",
        metavar="ENDPOINTS",
        help="the etcd endpoints HOST:PORT[,...] the VM's daemon uses, as the VM reaches them"
        " (required; not the global --etcd, which is this command's own store)",
    )
    for flag, what in (
        ("--tls-ca", "the CA that signed etcd's certificate"),
        ("--tls-cert", "the client certificate for etcd"),
        ("--tls-key", "that certificate's key"),
    ):
        g.add_argument(
            flag,
            metavar="PATH",
            help=f"{what}: a path ON THE VM, a file the operator provisions (never inlined)",
        )
    g.add_argument(
        "--platform-vm",
        metavar="IMAGE,FLAVOR,NETWORK",
        help="heat only: add the site's platform VM booted with the onboarding user data"
        " (NETWORK: one the cloudlet defines, or the site's)",
    )


def onboarding(args: argparse.Namespace) -> Onboarding:
    from cloudlet.onboard import OnboardError, Onboarding, Wheel, check_wheel

    if not args.vm_etcd:
        raise OnboardError(f"export {args.format} needs --etcd ENDPOINTS (after {args.format!r})")
    wheel = None
    if args.wheel is not None:
        name = os.path.basename(args.wheel)
        check_wheel(name, args.pin)
        try:
            with open(args.wheel, "rb") as fh:
                wheel = Wheel(name, fh.read())
        except OSError as err:
            raise OnboardError(f"cannot read --wheel {args.wheel}: {err.strerror}") from None
    return Onboarding(
        version=args.pin,
        etcd=args.vm_etcd,
        index=args.index,
        wheel=wheel,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )


def render(args: argparse.Namespace) -> str:
    from cloudlet.onboard import reconcile_unit, user_data

    return user_data(onboarding(args), reconcile_unit())


def cmd_export_onboard(args: argparse.Namespace) -> int:
    from cloudlet.onboard import fits_nova

    if args.file is not None:
        raise CloudletError(f"export onboard takes no FILE (got {args.file})")
    if args.platform_vm is not None:
        raise CloudletError("--platform-vm is for export heat (onboard renders the user data only)")
    text = render(args)
    if not fits_nova(text):
        print(
            "cloudlet: warning: this user data is over Nova's 64 KiB: OpenStack will refuse it"
            " (use --index there)",
            file=sys.stderr,
        )
    if args.output == "-":
        sys.stdout.write(text)
    else:
        write_output(args.output, text)
    return 0


def platform_vm(args: argparse.Namespace, cloudlets: int) -> PlatformVM | None:
    """The platform VM ``export heat --platform-vm`` adds, or None without the flag."""
    from cloudlet.onboard import NOVA_USER_DATA_MAX, OnboardError, fits_nova
    from cloudlet.providers.openstack.heat import PlatformVM

    if args.platform_vm is None:
        return None
    parts = args.platform_vm.split(",")
    if len(parts) != 3 or not all(parts):
        raise OnboardError(f"--platform-vm {args.platform_vm!r}: give IMAGE,FLAVOR,NETWORK")
    if cloudlets != 1:
        raise OnboardError(
            f"--platform-vm takes a FILE of one cloudlet (it has {cloudlets}): one VM per stack"
        )
    text = render(args)
    if not fits_nova(text):
        raise OnboardError(
            f"the platform VM's user data is over Nova's {NOVA_USER_DATA_MAX} bytes (base64):"
            " name an index (--index URL) instead of shipping --wheel"
        )
    return PlatformVM(parts[0], parts[1], parts[2], text)
