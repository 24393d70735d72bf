"""The daemon outlives a reconcile that crashes, and stops (non-zero) when one
of its own loops dies instead of limping on without it.

In process, with the embedded store and the fake cloud: these are about the
daemon's threads, not about a server. (CI once lost a worker thread to an
exception the etcd client raised that nobody had classified.)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
from conftest import ROUTER

from cloudlet.engine.daemon import Daemon, DaemonOptions
from cloudlet.model.codec import unstructure
from cloudlet.model.load import load_file
from cloudlet.model.spec import Cloudlet
from cloudlet.providers.base import Provider
from cloudlet.providers.fake import FakeProvider
from cloudlet.shepherd.metrics import Metrics
from cloudlet.store.records import StateRepo
from cloudlet.store.sqlite import open_store


def _wait(check: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def _daemon(state_dir: Path, provider_for: Callable[[Cloudlet], Provider]) -> Daemon:
    repo = StateRepo(open_store(state_dir))
    cloudlet = load_file(str(ROUTER))[0]
    repo.put_desired(cloudlet.metadata.name, unstructure(cloudlet), at=time.time())
    options = DaemonOptions(resync=60, workers=1, poll=0.05)
    return Daemon(repo, provider_for, Metrics("test"), options)


def _run(daemon: Daemon) -> threading.Thread:
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    return thread


def test_a_crashing_reconcile_is_retried_by_the_same_worker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def provider_for(cloudlet: Cloudlet) -> Provider:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("Cannot invoke RPC: Channel closed!")
        return FakeProvider(tmp_path)

    daemon = _daemon(tmp_path, provider_for)
    daemon.queue._backoff = type(daemon.queue._backoff)(base=0.05)
    thread = _run(daemon)
    try:
        name = load_file(str(ROUTER))[0].metadata.name
        converged = _wait(
            lambda: (
                (daemon.repo.get_status(name) or {}).get("lastSync", {}).get("outcome")
                == "converged"
            )
        )
        assert converged, "the only worker never came back after the crash"
        assert len(calls) >= 2
        crashed = [r for r in caplog.records if "reconcile crashed" in r.getMessage()]
        assert crashed and "Channel closed" in crashed[0].getMessage()
        assert (
            crashed[0].levelno == logging.ERROR and not crashed[0].exc_info
        )  # no traceback unless --verbose
    finally:
        daemon.stop.set()
        thread.join(30)
    assert not thread.is_alive() and daemon.failure is None


def test_a_dead_loop_stops_the_daemon_with_its_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class BrokenWatch(Daemon):
        def _watch(self) -> None:
            raise RuntimeError("the watch fell over")

    plain = _daemon(tmp_path, lambda cloudlet: FakeProvider(tmp_path))
    daemon = BrokenWatch(plain.repo, plain.provider_for, plain.metrics, plain.options)
    thread = _run(daemon)
    thread.join(30)
    assert not thread.is_alive(), "the daemon kept running without its watch loop"
    assert daemon.failure == "watch: RuntimeError: the watch fell over"
    assert any("internal error in the watch loop" in r.getMessage() for r in caplog.records)


def test_a_reconcile_never_puts_back_a_spec_replaced_meanwhile(tmp_path: Path) -> None:
    """An operator's apply lands between the daemon's read of the spec and
    its sync (seen in CI after an etcd restart: the daemon wrote the old spec
    back as a new revision, and the apply was lost)."""
    old = load_file(str(ROUTER))[0]
    new = attrs.evolve(
        old,
        spec=attrs.evolve(old.spec, vms=[attrs.evolve(v, flavor="m1.large") for v in old.spec.vms]),
    )
    applied: list[int] = []

    def provider_for(cloudlet: Cloudlet) -> Provider:
        if not applied:  # the operator's apply, just after the daemon read the spec
            applied.append(
                daemon.repo.put_desired(new.metadata.name, unstructure(new), at=time.time())
            )
        return FakeProvider(tmp_path)

    daemon = _daemon(tmp_path, provider_for)
    name = old.metadata.name
    first = daemon.reconcile(name)
    assert first is not None and not first.converged
    assert "superseded" in first.message
    record = daemon.repo.get_desired(name)
    assert record is not None and record.revision == applied[0]
    assert record.document == unstructure(new)  # the apply stands
    assert FakeProvider(tmp_path).observe(name) == []  # nothing done for the old spec
    second = daemon.reconcile(name)
    assert second is not None and second.converged
    flavors = {o.attrs.get("flavor") for o in FakeProvider(tmp_path).observe(name)}
    assert "m1.large" in flavors
    history = [h.document for h in daemon.repo.history(name)]
    assert history == [unstructure(old), unstructure(new)]
