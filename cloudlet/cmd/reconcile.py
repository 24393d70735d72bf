"""``cloudlet reconcile``: the daemon's entry point and its flags."""

from __future__ import annotations

import argparse
import logging
import math
import signal
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cloudlet.cmd.context import Context
from cloudlet.errors import CloudletError

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

    from cloudlet.engine.daemon import Daemon
    from cloudlet.model.spec import Cloudlet
    from cloudlet.providers.base import Provider
    from cloudlet.shepherd.metrics import Metrics

log = logging.getLogger("cloudlet.daemon")


def check_flags(args: argparse.Namespace) -> None:
    """Refuse, in one line, values that would make the daemon spin, never
    wake, or fail later with a traceback (``--poll 0``, ``--resync nan``)."""
    for flag, value in (
        ("--resync", args.resync),
        ("--poll", args.poll),
        ("--lease-ttl", args.lease_ttl),
    ):
        if not (math.isfinite(value) and value > 0):
            raise CloudletError(f"{flag} must be a positive number of seconds, not {value}")
    for flag, count in (("--workers", args.workers), ("--parallelism", args.parallelism)):
        if count < 1:
            raise CloudletError(f"{flag} must be at least 1, not {count}")
    port = args.metrics_port
    if port is not None and not 1 <= port <= 65535:
        raise CloudletError(f"--metrics-port must be a port number (1-65535), not {port}")
    if args.replica_id is not None and (not args.replica_id.strip() or "/" in args.replica_id):
        raise CloudletError(
            f"--replica-id must be a non-empty name without '/': {args.replica_id!r}"
        )


def cmd_reconcile(args: argparse.Namespace) -> int:
    # The daemon, the stores and prometheus_client load only for the daemon.
    from cloudlet.engine.daemon import Daemon, DaemonOptions
    from cloudlet.shepherd.metrics import Metrics
    from cloudlet.store.ownership import Ownership

    check_flags(args)
    if not args.verbose:  # the daemon tells what it does; one-shot commands only warn
        logging.getLogger("cloudlet").setLevel(logging.INFO)
    ctx = Context.from_args(args.state_dir, args.etcd)
    lock = threading.Lock()

    def provider_for(cloudlet: Cloudlet) -> Provider:
        with lock:
            return ctx.provider(cloudlet.spec.platform)

    # Stable across restarts (the metrics' label, the hashing); the lease's
    # holder adds a random suffix of its own, unique to this process.
    replica = args.replica_id or socket.gethostname()
    metrics = Metrics(replica)
    options = DaemonOptions(
        resync=args.resync,
        workers=args.workers,
        poll=args.poll,
        parallelism=args.parallelism,
        lease_ttl=args.lease_ttl,
    )
    ownership = Ownership(ctx.repo.store, replica, ttl=args.lease_ttl)
    daemon = Daemon(ctx.repo, provider_for, metrics, options, ownership=ownership)
    with ctx:
        server = _serve_metrics(args, metrics, daemon)
        relay = _relay_agent(args, ctx, daemon)
        _stop_on_signals(daemon)
        log.info(
            "replica %s reconciling every %g s from %s",
            replica,
            args.resync,
            args.etcd or ctx.state_dir,
            extra={"replica": replica},
        )
        try:
            daemon.run()
        finally:
            if relay is not None:
                relay.stop.set()
            if server is not None:
                server.shutdown()
                server.server_close()
    return 0 if daemon.failure is None else 1


def _relay_agent(args: argparse.Namespace, ctx: Context, daemon: Daemon) -> Any:
    """With ``--relay``: the relay's site side in a thread (shell and logs
    on this site's VMs, over a connection dialled out: ``cloudlet/relay``)."""
    if not args.relay:
        return None
    from cloudlet.cmd.relaycmd import site_agent
    from cloudlet.relay.site import agent_thread

    agent = site_agent(args, ctx, "--relay-")
    agent.stop = daemon.stop  # the daemon's shutdown stops it too
    agent_thread(agent)
    return agent


def _serve_metrics(
    args: argparse.Namespace, metrics: Metrics, daemon: Daemon
) -> ThreadingHTTPServer | None:
    """The metrics port with the daemon's probes, if asked for; before any
    work starts, so that a port in use is said at once."""
    if args.metrics_port is None:
        return None
    server = metrics.serve(args.metrics_port, args.metrics_addr, daemon.readiness)
    log.info(
        "metrics on http://%s:%d/metrics (probes /healthz, /readyz)",
        args.metrics_addr,
        args.metrics_port,
    )
    return server


def _stop_on_signals(daemon: Daemon) -> None:
    def on_signal(signum: int, frame: Any) -> None:
        log.warning("signal %d: finishing in-flight steps, then stopping", signum)
        daemon.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    from cloudlet.cmd.relaycmd import site_flags

    p = add("reconcile", cmd_reconcile, "daemon: keep every stored cloudlet converged")
    p.add_argument("--resync", type=float, default=60.0, help="seconds between drift checks")
    p.add_argument("--workers", type=int, default=4, help="cloudlets reconciled at once")
    p.add_argument("--parallelism", type=int, default=10, help="provider calls per cloudlet")
    p.add_argument("--poll", type=float, default=0.1, help="seconds between store polls")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve /metrics, /healthz and /readyz on this port (default: none)",
    )
    p.add_argument("--metrics-addr", default="127.0.0.1", help="address to serve on")
    p.add_argument(
        "--replica-id",
        default=None,
        help="this replica's stable name, in metrics and ownership (default: the host name)",
    )
    p.add_argument(
        "--lease-ttl",
        type=float,
        default=10.0,
        help="seconds a dead replica's cloudlets stay owned before takeover",
    )
    site_flags(p, "also serve shell and logs through this relay (dialled out)", prefix="--relay-")
