"""``cloudlet reconcile``: the daemon's entry point and its flags."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cloudlet.cmd.context import Context
from cloudlet.errors import CloudletError

if TYPE_CHECKING:
    from cloudlet.model.spec import Cloudlet
    from cloudlet.providers.base import Provider

log = logging.getLogger("cloudlet.daemon")


def cmd_reconcile(args: argparse.Namespace) -> int:
    # The daemon, the stores and prometheus_client load only for the daemon.
    from cloudlet.engine.daemon import Daemon, DaemonOptions
    from cloudlet.shepherd.metrics import Metrics
    from cloudlet.store.ownership import Ownership

    if args.resync <= 0 or args.workers < 1 or args.parallelism < 1 or args.lease_ttl <= 0:
        raise CloudletError("--resync must be positive; --workers and --parallelism at least 1")
    ctx = Context.from_args(args.state_dir, args.etcd)
    lock = threading.Lock()

    def provider_for(cloudlet: Cloudlet) -> Provider:
        with lock:
            return ctx.provider(cloudlet.spec.platform)

    replica = args.replica_id or f"{socket.gethostname()}-{os.getpid()}"
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
    if args.metrics_port is not None:
        metrics.serve(args.metrics_port, args.metrics_addr)
        log.warning("metrics on http://%s:%d/metrics", args.metrics_addr, args.metrics_port)

    def on_signal(signum: int, frame: Any) -> None:
        log.warning("signal %d: finishing in-flight steps, then stopping", signum)
        daemon.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.warning(
        "replica %s reconciling every %.0f s from %s",
        replica,
        args.resync,
        args.etcd or ctx.state_dir,
    )
    with ctx:
        daemon.run()
    return 0 if daemon.failure is None else 1


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("reconcile", cmd_reconcile, "daemon: keep every stored cloudlet converged")
    p.add_argument("--resync", type=float, default=60.0, help="seconds between drift checks")
    p.add_argument("--workers", type=int, default=4, help="cloudlets reconciled at once")
    p.add_argument("--parallelism", type=int, default=10, help="provider calls per cloudlet")
    p.add_argument("--poll", type=float, default=0.1, help="seconds between store polls")
    p.add_argument(
        "--metrics-port", type=int, default=None, help="serve /metrics on this port (default off)"
    )
    p.add_argument("--metrics-addr", default="127.0.0.1", help="the metrics' listen address")
    p.add_argument("--replica-id", default=None, help="this replica's name (host-pid)")
    p.add_argument(
        "--lease-ttl",
        type=float,
        default=10.0,
        help="seconds a dead replica's cloudlets stay owned before takeover",
    )
