"""``cloudlet relay``, ``relay-agent``, ``token issue``, ``shell`` and ``logs``:
shell and log access to VMs through a relay (``cloudlet/relay/``)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from cloudlet.cmd import helptext
from cloudlet.cmd.context import Context
from cloudlet.errors import CloudletError, NotFound

log = logging.getLogger("cloudlet.relay")


def address(text: str, flag: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise CloudletError(f"{flag} must be HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


def _readable(path: str | None, flag: str) -> None:
    if path is not None and not os.access(path, os.R_OK):
        raise CloudletError(f"{flag} {path}: no such readable file")


def cmd_relay(args: argparse.Namespace) -> int:
    import asyncio

    from cloudlet.relay import server, siteauth

    host, port = address(args.listen, "--listen")
    if args.site_ca is None and not args.insecure_unauthenticated_sites:
        raise CloudletError(
            "--site-ca CA is needed: the CA whose certificates sites must present "
            "(--insecure-unauthenticated-sites lets any connection be a site)"
        )
    for flag, path in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        _readable(path, flag)
    _readable(args.site_ca, "--site-ca")
    logging.getLogger("cloudlet").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    ctx = siteauth.server_context(args.tls_cert, args.tls_key, args.site_ca)
    with Context.from_args(args.state_dir, args.etcd) as cctx:
        relay = server.Relay(cctx.repo.store, ctx, authenticate_sites=args.site_ca is not None)

        async def main() -> None:
            task = asyncio.current_task()
            assert task is not None
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, task.cancel)
            try:
                await server.serve(relay, host, port)
            except OSError as err:
                raise CloudletError(f"--listen {host}:{port}: {err.strerror}") from None

        try:
            asyncio.run(main())
        except asyncio.CancelledError:
            log.info("relay stopped")
    return 0


def site_agent(args: argparse.Namespace, ctx: Context, prefix: str = "--tls-") -> Any:
    """The site side for ``args`` (relay-agent's flags, or reconcile's)."""
    from cloudlet.relay.protocol import client_context
    from cloudlet.relay.site import SiteAgent, StoreTargets

    if not args.relay:
        raise CloudletError("--relay HOST:PORT is needed: the relay to dial out to")
    where = address(args.relay, "--relay")
    for f, path in (("ca", args.tls_ca), ("cert", args.tls_cert), ("key", args.tls_key)):
        _readable(path, f"{prefix}{f}")
    tls = client_context(args.tls_ca, args.tls_cert, args.tls_key)
    site = args.site_id or socket.gethostname()
    return SiteAgent(where, tls, StoreTargets(ctx.repo.store, ctx.state_dir), site)


def cmd_relay_agent(args: argparse.Namespace) -> int:
    logging.getLogger("cloudlet").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    with Context.from_args(args.state_dir, args.etcd) as ctx:
        agent = site_agent(args, ctx)

        def on_signal(signum: int, frame: object) -> None:
            agent.stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        agent.run()
    return 0


def cmd_token_issue(args: argparse.Namespace) -> int:
    from cloudlet.relay import tokens
    from cloudlet.relay.protocol import vm_id

    with Context.from_args(args.state_dir, args.etcd) as ctx:
        vm = _stored_vm(ctx, args.name, vm_id(args.vm))
        token, text = tokens.issue(
            ctx.repo.store, args.name, vm, ttl=args.ttl, now=time.time(), sessions=args.sessions
        )
    print(text)
    plural = "" if token.sessions == 1 else "s"
    print(
        f"token {token.id} for {token.cloudlet} {token.vm}, valid {args.ttl:g} s "
        f"for {token.sessions} session{plural}",
        file=sys.stderr,
    )
    return 0


def _stored_vm(ctx: Context, name: str, vm: str) -> str:
    """``vm`` if it is a VM of the stored cloudlet ``name``'s desired spec
    (its VMs, its LBs' and its clusters' as the expansion makes them); else
    NotFound naming the mistake."""
    from cloudlet.model.expand import expand
    from cloudlet.model.validate import NAME_RE

    if not NAME_RE.fullmatch(name):
        raise NotFound(f"no cloudlet named {name!r} in {ctx.where} (names match {NAME_RE.pattern})")
    cloudlet = ctx.stored(name)
    vms = sorted(
        r.id for r in expand(cloudlet, ctx.repo.get_ports(name)).resources if r.kind == "vm"
    )
    if vm not in vms:
        have = ", ".join(v.removeprefix("vm/") for v in vms) or "none"
        raise NotFound(f"cloudlet {name} has no VM {vm.removeprefix('vm/')!r} (its VMs: {have})")
    return vm


def _user_flags(args: argparse.Namespace) -> tuple[tuple[str, int], str, Any]:
    from cloudlet.relay.protocol import client_context

    relay = args.relay or os.environ.get("CLOUDLET_RELAY")
    token = args.token or os.environ.get("CLOUDLET_RELAY_TOKEN")
    if not relay:
        raise CloudletError("no relay: give --relay HOST:PORT (or CLOUDLET_RELAY)")
    if not token:
        raise CloudletError("no token: give --token T (or CLOUDLET_RELAY_TOKEN)")
    _readable(args.tls_ca, "--tls-ca")
    return address(relay, "--relay"), token, client_context(args.tls_ca)


def cmd_shell(args: argparse.Namespace) -> int:
    from cloudlet.relay import client

    cmd = _command(args)
    where, token, tls = _user_flags(args)
    request = {"token": token, "cloudlet": args.name, "vm": args.vm, "kind": "shell", "cmd": cmd}
    return client.run(where, tls, request)


def _command(args: argparse.Namespace) -> list[str]:
    """CMD after ``--``. argparse's REMAINDER also takes flags given between
    VM and ``--`` (and drops a ``--`` right after VM): flags before a ``--``,
    or leading ones with none, are parsed again as the flags they are."""
    rest: list[str] = args.cmd
    if "--" in rest:
        at = rest.index("--")
        flags, cmd = rest[:at], rest[at + 1 :]
    elif rest[:1] and rest[0].startswith("-"):
        flags, cmd = rest, []
    else:
        flags, cmd = [], rest
    if flags:
        parser: argparse.ArgumentParser = args.shell_parser
        again = type(parser)(prog=parser.prog, add_help=False)
        _relay_flags(again)
        again.parse_args(flags, namespace=args)
    return cmd


def cmd_logs(args: argparse.Namespace) -> int:
    from cloudlet.relay import client

    where, token, tls = _user_flags(args)
    request = {
        "token": token, "cloudlet": args.name, "vm": args.vm, "kind": "logs",
        "follow": args.follow,
    }  # fmt: skip
    return client.run(where, tls, request)


def site_flags(p: argparse.ArgumentParser, relay_help: str, prefix: str = "--tls-") -> None:
    """The site side's flags: relay-agent's ``--tls-ca`` and the like;
    reconcile's ``--relay-ca`` (its own TLS is not the relay's)."""
    p.add_argument("--relay", metavar="HOST:PORT", help=relay_help)
    p.add_argument(
        f"{prefix}ca",
        dest="tls_ca",
        metavar="CA",
        help="the CA that signed the relay's certificate",
    )
    p.add_argument(
        f"{prefix}cert",
        dest="tls_cert",
        metavar="CERT",
        help="this site's client certificate (signed by the relay's --site-ca, naming "
        "its cloudlets as subjectAltName URIs cloudlet:NAME)",
    )
    p.add_argument(f"{prefix}key", dest="tls_key", metavar="KEY", help="that certificate's key")
    p.add_argument(
        "--site-id" if prefix == "--tls-" else f"{prefix}site-id",
        dest="site_id",
        default=None,
        help="this site's name in the relay's log (default: the host name)",
    )


def _user_side(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="the cloudlet's name")
    p.add_argument("vm", metavar="VM", help="the VM's name (game) or id (vm/game)")
    _relay_flags(p)


def _relay_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--relay", metavar="HOST:PORT", help="the relay (env CLOUDLET_RELAY)")
    p.add_argument(
        "--token", help="a token from cloudlet token issue (env CLOUDLET_RELAY_TOKEN: not in ps)"
    )
    p.add_argument("--tls-ca", metavar="CA", help="the CA file that signed the relay's certificate")


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("relay", cmd_relay, "serve the relay that shell and logs sessions go through")
    p.add_argument("--listen", required=True, metavar="HOST:PORT", help="address to serve TLS on")
    p.add_argument("--tls-cert", required=True, metavar="CERT", help="the relay's certificate")
    p.add_argument("--tls-key", required=True, metavar="KEY", help="its private key")
    sites = p.add_mutually_exclusive_group()
    sites.add_argument(
        "--site-ca",
        metavar="CA",
        help="sites must present a client certificate of this CA naming their cloudlets "
        "(subjectAltName URI cloudlet:NAME); needed unless --insecure-unauthenticated-sites",
    )
    sites.add_argument(
        "--insecure-unauthenticated-sites",
        action="store_true",
        help="let any connection register as a site and receive users' sessions "
        "(a test bench only; logged as a warning)",
    )
    p = add("relay-agent", cmd_relay_agent, "the site side: keep a connection to the relay")
    site_flags(p, "the relay to dial out to")
    p = add("token", None, "issue relay tokens")
    tsub = p.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    t = tsub.add_parser(
        "issue",
        help="a token for one VM of a cloudlet, printed once",
        formatter_class=helptext.Formatter,  # the defaults shown, as on the commands
    )
    t.add_argument("name", metavar="NAME", help="the cloudlet's name")
    t.add_argument("vm", metavar="VM", help="the VM's name (game) or id (vm/game)")
    t.add_argument("--ttl", type=float, default=300.0, help="seconds the token is valid")
    t.add_argument(
        "--sessions",
        type=int,
        default=1,
        help="sessions the token opens before it is used up (at most 100)",
    )
    t.set_defaults(handler=cmd_token_issue)
    p = add("shell", cmd_shell, "a shell (or CMD) on a VM, through the relay")
    _user_side(p)
    p.add_argument(
        "cmd",
        nargs=argparse.REMAINDER,
        metavar="-- CMD",
        help="a command to run instead of a shell",
    )
    p.set_defaults(shell_parser=p)
    p = add("logs", cmd_logs, "a VM's back-end log, through the relay")
    _user_side(p)
    p.add_argument("-f", "--follow", action="store_true", help="keep printing what is appended")
