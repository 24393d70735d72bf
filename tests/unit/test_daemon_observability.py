"""The daemon's account of itself, in process: the metrics endpoint and its
probes, series forgotten, the waiting-work gauge, readiness, JSON log
fields, and log lines that go above a live progress bar, not through it."""

from __future__ import annotations

import io
import json
import logging
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
from rich.console import Console
from rich.progress import Progress

from cloudlet import __version__
from cloudlet.cmd.main import JsonFormatter, setup_logging
from cloudlet.engine.daemon import Daemon, DaemonOptions
from cloudlet.engine.queue import WorkQueue
from cloudlet.errors import CloudletError
from cloudlet.providers.fake import FakeProvider
from cloudlet.shepherd.metrics import Metrics
from cloudlet.shepherd.status import Status
from cloudlet.store.ownership import Ownership, preferred
from cloudlet.store.records import StateRepo
from cloudlet.store.sqlite import open_store


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture
def served() -> Iterator[tuple[Metrics, int, list[str | None]]]:
    metrics = Metrics("r1")
    why: list[str | None] = [None]
    server = metrics.serve(0, "127.0.0.1", lambda: why[0])
    try:
        yield metrics, server.server_address[1], why
    finally:
        server.shutdown()
        server.server_close()


def test_probes_and_metrics_only_at_their_paths(
    served: tuple[Metrics, int, list[str | None]],
) -> None:
    _, port, why = served
    assert get(port, "/healthz") == (200, "ok\n")
    assert get(port, "/readyz") == (200, "ready\n")
    why[0] = "store unreachable: connection refused"
    assert get(port, "/readyz") == (503, "not ready: store unreachable: connection refused\n")
    assert get(port, "/healthz")[0] == 200  # alive all the same
    status, text = get(port, "/metrics")
    assert status == 200
    assert f'cloudlet_build_info{{version="{__version__}"}} 1.0' in text
    assert "process_cpu_seconds_total" in text and "python_info{" in text
    for path in ("/", "/metrics/", "/index.html", "/healthz/x"):
        assert get(port, path)[0] == 404, path


def test_a_port_in_use_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CloudletError, match=rf"^metrics port 127\.0\.0\.1:{port} is in use$"):
            Metrics("r1").serve(port, "127.0.0.1")


def _status(kinds: list[tuple[str, str]]) -> Status:
    """What ``record_status`` reads of a status: its resources' kind and state, its drift."""
    resources = [SimpleNamespace(kind=k, state=s) for k, s in kinds]
    return cast(Status, SimpleNamespace(resources=resources, drift=("vm/0",)))


def test_forget_drops_every_series_of_that_cloudlet_only() -> None:
    metrics = Metrics("r1")
    for name in ("gone", "kept"):
        metrics.record_status(name, _status([("vm", "ready"), ("lb", "ready")]), converged=True)
    metrics.forget("gone")
    text = "\n".join(f"{s.name}{s.labels}" for m in metrics.registry.collect() for s in m.samples)
    assert "'cloudlet': 'gone'" not in text
    assert text.count("'cloudlet': 'kept'") == 4  # drifted, two resources, last success


def test_queue_waiting_counts_due_work_not_scheduled_resyncs() -> None:
    clock = Clock()
    queue = WorkQueue(clock=clock)
    queue.add("due-now")
    queue.add("resync-later", 60.0)
    assert queue.waiting() == 1 and queue.depth() == 2
    assert queue.get(timeout=0) == "due-now"
    assert queue.waiting() == 0  # being reconciled is not waiting
    clock.now += 61
    assert queue.waiting() == 1


def test_queue_depth_gauge_reads_the_waiting_work(tmp_path: Path) -> None:
    clock = Clock()
    repo = StateRepo(open_store(tmp_path))
    metrics = Metrics("r1")
    daemon = Daemon(repo, lambda c: FakeProvider(tmp_path), metrics)
    daemon.queue = WorkQueue(clock=clock)
    daemon.__attrs_post_init__()
    daemon.queue.add("a", 30.0)
    assert metrics.registry.get_sample_value("cloudlet_queue_depth") == 0
    clock.now += 31
    assert metrics.registry.get_sample_value("cloudlet_queue_depth") == 1
    repo.store.close()


def test_readiness_needs_a_store_read_and_a_current_lease(tmp_path: Path) -> None:
    clock = Clock()
    store = open_store(tmp_path)
    repo = StateRepo(store)
    options = DaemonOptions(poll=0.1, lease_ttl=10.0)
    own = Ownership(store, "r1", ttl=10.0)
    daemon = Daemon(
        repo, lambda c: FakeProvider(tmp_path), Metrics("r1"), options, ownership=own, clock=clock
    )
    assert daemon.readiness() == "store not read yet"
    daemon._store_read = clock.now
    assert daemon.readiness() == "ownership lease not taken yet"
    daemon._renew()
    assert daemon.readiness() is None
    clock.now += 11
    daemon._store_read = clock.now
    assert daemon.readiness() == "ownership lease not renewed for 11 s"
    daemon._renew()
    daemon._store_error = "database is locked"
    assert daemon.readiness() == "store unreachable: database is locked"
    daemon._store_error = None
    clock.now += 30
    assert daemon.readiness() == "store not read for 30 s"
    alone = Daemon(repo, lambda c: FakeProvider(tmp_path), Metrics("r1"), options, clock=clock)
    alone._store_read = clock.now
    assert alone.readiness() is None  # one replica, no lease needed
    store.close()


def test_json_log_lines_carry_the_extra_fields() -> None:
    record = logging.makeLogRecord(
        {
            "name": "cloudlet.daemon",
            "levelno": logging.INFO,
            "levelname": "INFO",
            "msg": "cloudlet %s: created %s",
            "args": ("c1", "vm/a"),
            "cloudlet": "c1",
            "id": "vm/a",
            "op": "create",
            "outcome": "ok",
            "duration": 0.25,
            "revision": 3,
        }
    )
    doc = json.loads(JsonFormatter().format(record))
    assert doc["message"] == "cloudlet c1: created vm/a"
    assert doc["level"] == "info" and doc["logger"] == "cloudlet.daemon"
    assert isinstance(doc["time"], float)
    assert {k: doc[k] for k in ("cloudlet", "id", "op", "outcome", "duration", "revision")} == {
        "cloudlet": "c1",
        "id": "vm/a",
        "op": "create",
        "outcome": "ok",
        "duration": 0.25,
        "revision": 3,
    }
    assert "args" not in doc and "msg" not in doc and "lineno" not in doc


def test_a_log_line_during_a_live_bar_goes_through_the_console(
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup_logging(False, "text")
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100)
    try:
        with Progress(console=console, transient=True) as bar:
            bar.add_task("round 1", total=2)
            logging.getLogger("cloudlet.engine").warning("a warning mid-bar")
        assert "WARNING cloudlet.engine: a warning mid-bar" in screen.getvalue()
        assert "a warning mid-bar" not in capsys.readouterr().err
        logging.getLogger("cloudlet.engine").warning("after the bar")
        assert "after the bar" in capsys.readouterr().err
    finally:
        logging.getLogger("cloudlet").handlers[:] = []
        logging.getLogger("cloudlet").setLevel(logging.NOTSET)


def test_a_cloudlet_handed_to_another_replica_loses_its_series_here(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    clock = Clock()
    clock.now = 1_000_000.0
    a = Ownership(store, "a", ttl=10.0, clock=clock)
    b = Ownership(store, "b", ttl=10.0, clock=clock)
    name = next(n for n in (f"site-{i}" for i in range(100)) if preferred(n, ["a", "b"]) == "b")
    metrics = Metrics("a")
    daemon = Daemon(StateRepo(store), lambda c: FakeProvider(tmp_path), metrics, ownership=a)
    a.heartbeat()
    daemon._seen = {name: 1, "other": 1}
    daemon._rebalance()  # alone: a takes both
    assert a.owns(name)
    for each in (name, "other"):
        metrics.record_status(each, _status([("vm", "ready")]), converged=True)
    b.heartbeat()  # b joins: name prefers b, so a hands it over
    daemon._rebalance()
    assert not a.owns(name)
    labels = [s.labels for m in metrics.registry.collect() for s in m.samples]
    assert not any(lab.get("cloudlet") == name for lab in labels)
    assert any(lab.get("cloudlet") == "other" for lab in labels) == a.owns("other")
    store.close()
