"""What the daemon decides from: its own sync record, never the status (a
display document), and a terminal error waits for a new revision; and the
one writer that forgets a destroyed cloudlet's desired state.

In process, with the embedded store and the fake cloud, like the
supervision tests: these are about the daemon's decisions, not a server.
"""

from __future__ import annotations

import time
from pathlib import Path

import attrs
import pytest
from conftest import ROUTER

from cloudlet.cmd.main import main
from cloudlet.engine.daemon import Daemon, DaemonOptions
from cloudlet.errors import LockTimeout
from cloudlet.model.codec import unstructure
from cloudlet.model.load import load_file
from cloudlet.model.spec import Cloudlet
from cloudlet.providers.base import Provider
from cloudlet.providers.fake import FakeCloud, FakeProvider
from cloudlet.shepherd.metrics import Metrics
from cloudlet.store.records import StateRepo, lock_name
from cloudlet.store.sqlite import open_store


def _spec(tmp_path: Path) -> Cloudlet:
    text = ROUTER.read_text().replace("flavor: m1.small}", "flavor: m1.small, driftPolicy: report}")
    path = tmp_path / "report.yaml"
    path.write_text(text)
    return load_file(str(path))[0]


def _daemon(tmp_path: Path, calls: list[str] | None = None) -> Daemon:
    def provider_for(cloudlet: Cloudlet) -> Provider:
        if calls is not None:
            calls.append(cloudlet.name)
        return FakeProvider(tmp_path)

    repo = StateRepo(open_store(tmp_path))
    return Daemon(repo, provider_for, Metrics("test"), DaemonOptions(workers=1))


def _ids(tmp_path: Path, name: str) -> set[str]:
    cloud = FakeCloud(tmp_path / "fake-cloud.db")
    try:
        return {str(o.id) for o in cloud.list_objects(name) if o.id}
    finally:
        cloud.close()


def test_a_resync_is_decided_from_the_sync_record_not_the_status(tmp_path: Path) -> None:
    """Renaming or losing a display key must not make the daemon heal a
    ``driftPolicy: report`` resource (the status once steered this)."""
    spec = _spec(tmp_path)
    name = spec.name
    daemon = _daemon(tmp_path)
    daemon.repo.put_desired(name, unstructure(spec), at=time.time())
    first = daemon.reconcile(name)
    assert first is not None and first.converged and "vm/cache" in _ids(tmp_path, name)
    cloud = FakeCloud(tmp_path / "fake-cloud.db")
    cloud.remove(name, "vm/cache")
    cloud.close()
    daemon.repo.put_status(name, {"cloudlet": name, "renamed": True})  # no lastSync at all
    second = daemon.reconcile(name)
    assert second is not None and second.converged
    assert "vm/cache" not in _ids(tmp_path, name), "a resync healed a report-policy VM"
    assert second.status is not None and "vm/cache" in second.status.drift
    record = daemon.repo.get_sync(name)
    assert record is not None and record.revision == first.revision and record.converged


def test_an_invalid_stored_spec_is_recorded_once_and_waits_for_a_new_revision(
    tmp_path: Path,
) -> None:
    spec = _spec(tmp_path)
    name = spec.name
    calls: list[str] = []
    daemon = _daemon(tmp_path, calls)
    daemon.repo.put_desired(name, unstructure(spec), at=time.time())
    daemon._reconcile_and_requeue(name)
    assert len(calls) == 1
    broken = unstructure(spec)
    broken["spec"]["dataPath"] = "sideways"  # passed validation once, not any more
    bad = daemon.repo.put_desired(name, broken, at=time.time())

    daemon._reconcile_and_requeue(name)
    record = daemon.repo.get_sync(name)
    assert record is not None and record.terminal and record.revision == bad
    assert "invalid" in record.message and "sideways" in record.message
    status = daemon.repo.get_status(name) or {}
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "TerminalError"
    assert daemon.queue.depth() == 0, "a terminal error was queued for a retry"
    assert len(calls) == 1, "no provider for a spec that cannot be read"

    # Asked again (a restart, a takeover): nothing is recorded anew.
    again = daemon.reconcile(name)
    assert again is not None and again.outcome == "terminal"
    assert daemon.repo.get_sync(name) == record

    fixed = attrs.evolve(spec, spec=attrs.evolve(spec.spec, data_path="router"))
    good = daemon.repo.put_desired(name, unstructure(fixed), at=time.time())
    daemon._reconcile_and_requeue(name)
    record = daemon.repo.get_sync(name)
    assert record is not None and record.converged and record.revision == good
    assert not record.terminal


def test_destroy_forgets_the_desired_state_once_and_under_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cloudlet destroy`` once deleted the stored spec a second time, after
    the engine had, outside the lock: a sync that took the lock in between
    lost its spec and its objects were orphaned."""
    spec = _spec(tmp_path)
    state = tmp_path / "state"
    assert main(["--state-dir", str(state), "sync", str(ROUTER), "--yes", "--json"]) == 0
    held_each_time: list[bool] = []
    real = StateRepo.delete_desired

    def spy(self: StateRepo, name: str) -> bool:
        other = open_store(state)
        try:
            with other.lock(lock_name(name), 0.0):
                held_each_time.append(False)
        except LockTimeout:
            held_each_time.append(True)
        finally:
            other.close()
        return real(self, name)

    monkeypatch.setattr(StateRepo, "delete_desired", spy)
    assert main(["--state-dir", str(state), "destroy", spec.name, "--yes"]) == 0
    assert held_each_time == [True], held_each_time
