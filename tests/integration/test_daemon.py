"""The reconcile daemon as operators run it: a real process, real signals,
the real metrics endpoint; the simulated cloud read in-process to poll fast."""

from __future__ import annotations

import signal
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import ROUTER, cli, edited_copy, ok, spawn

from cloudlet.providers.fake import FakeCloud
from cloudlet.store.records import StateRepo
from cloudlet.store.sqlite import open_store

NAME = "munich-2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], bool], timeout: float = 15.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if check():
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def tagged(state_dir: Path, name: str = NAME) -> dict[str, dict[str, object]]:
    cloud = FakeCloud(state_dir / "fake-cloud.db")
    try:
        return {o.id: dict(o.attrs) for o in cloud.list_objects(name) if o.id}
    finally:
        cloud.close()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def metric(text: str, prefix: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
    )


@pytest.fixture
def daemon(state_dir: Path) -> Iterator[int]:
    port = free_port()
    proc = spawn("reconcile", "--resync", "3", "--metrics-port", str(port), state_dir=state_dir)
    try:
        wait_for("metrics endpoint", lambda: _up(port))
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=20)
        except Exception:
            proc.kill()
            raise
        _, err = proc.communicate()
        assert "Traceback" not in err, err
        assert code == 0, err


def _up(port: int) -> bool:
    try:
        scrape(port)
        return True
    except OSError:
        return False


def test_daemon_acts_on_changes_heals_drift_and_exports_metrics(
    daemon: int, state_dir: Path, tmp_path: Path
) -> None:
    ok(cli("apply", ROUTER, state_dir=state_dir))
    wait_for("first convergence", lambda: len(tagged(state_dir)) >= 23)
    assert tagged(state_dir)["vm/cache"]["flavor"] == "m1.small"

    # a spec change is acted on at once, well before the 3 s resync
    bigger = edited_copy(ROUTER, tmp_path / "r2.yaml", "flavor: m1.small", "flavor: m1.large")
    ok(cli("apply", bigger, state_dir=state_dir))
    took = wait_for("flavor update", lambda: tagged(state_dir)["vm/cache"]["flavor"] == "m1.large")
    assert took < 2.5, f"spec change took {took:.2f} s: it waited for a resync"

    # drift made out of band is healed by the periodic resync
    ok(cli("fake", "rm", NAME, "vm/cache", state_dir=state_dir))
    assert "vm/cache" not in tagged(state_dir)
    wait_for("drift healed", lambda: "vm/cache" in tagged(state_dir), timeout=10)

    # the engine counts a step once its sync is over: wait for the count
    creates = 'cloudlet_actions_total{kind="vm",op="create",outcome="ok"}'
    wait_for("the heal counted", lambda: metric(scrape(daemon), creates) >= 7)
    text = scrape(daemon)
    assert metric(text, 'cloudlet_actions_total{kind="vm",op="update",outcome="ok"}') >= 1
    assert metric(text, "cloudlet_reconcile_duration_seconds_count") >= 3
    assert metric(text, "cloudlet_owned_cloudlets{replica=") == 1
    assert (
        metric(text, f'cloudlet_last_successful_sync_timestamp_seconds{{cloudlet="{NAME}"}}')
        > time.time() - 60
    )
    assert metric(text, 'cloudlet_provider_call_duration_seconds_count{op="observe"') >= 3
    assert f'cloudlet_resources{{cloudlet="{NAME}",kind="vm",state="ready"}}' in text
    assert "cloudlet_queue_depth" in text


def test_report_policy_reports_drift_and_never_heals(
    daemon: int, state_dir: Path, tmp_path: Path
) -> None:
    """Per object: `cache` is under drift policy report, the cluster heals."""
    spec = edited_copy(
        ROUTER,
        tmp_path / "report.yaml",
        "flavor: m1.small}",
        "flavor: m1.small, driftPolicy: report}",
    )
    ok(cli("apply", spec, state_dir=state_dir))
    wait_for("first convergence", lambda: len(tagged(state_dir)) >= 23)
    ok(cli("fake", "rm", NAME, "vm/cache", state_dir=state_dir))
    ok(cli("fake", "rm", NAME, "vm/edge.worker.1", state_dir=state_dir))
    repo = StateRepo(open_store(state_dir))

    def reported() -> bool:
        status = repo.get_status(NAME) or {}
        return "vm/cache" in status.get("drift", [])

    wait_for("the heal-policy worker healed", lambda: "vm/edge.worker.1" in tagged(state_dir))
    wait_for("drift of the report-policy VM reported", reported, timeout=10)
    time.sleep(3.5)  # a further resync must still not heal it
    assert "vm/cache" not in tagged(state_dir)
    assert metric(scrape(daemon), f'cloudlet_drifted_resources{{cloudlet="{NAME}"}}') >= 1
    # a new revision of the spec is applied in full, report policy or not
    bigger = edited_copy(spec, tmp_path / "r3.yaml", "m1.small, drift", "m1.large, drift")
    ok(cli("apply", bigger, state_dir=state_dir))
    wait_for("the new revision applied", lambda: "vm/cache" in tagged(state_dir))


def owners(state_dir: Path) -> dict[str, str]:
    import json

    store = open_store(state_dir)
    try:
        return {
            e.key.rsplit("/", 1)[1]: json.loads(e.value)["replica"]
            for e in store.list("/cloudlet/owners/")
        }
    finally:
        store.close()


def test_two_replicas_share_cloudlets_and_survive_a_kill(state_dir: Path, tmp_path: Path) -> None:
    names = [f"site-{i}" for i in range(6)]
    for name in names:
        spec = edited_copy(ROUTER, tmp_path / f"{name}.yaml", f"name: {NAME}", f"name: {name}")
        ok(cli("apply", spec, state_dir=state_dir))
    ttl = 2.0
    procs = {
        rid: spawn(
            "reconcile",
            "--resync",
            "2",
            "--lease-ttl",
            str(ttl),
            "--replica-id",
            rid,
            state_dir=state_dir,
        )
        for rid in ("a", "b")
    }
    try:
        wait_for(
            "all converged", lambda: all(len(tagged(state_dir, n)) >= 23 for n in names), timeout=30
        )
        wait_for("both replicas own some", lambda: set(owners(state_dir).values()) == {"a", "b"})
        split = owners(state_dir)
        assert sorted(split) == names
        victim = split[names[0]]
        survivor = "b" if victim == "a" else "a"
        procs[victim].kill()  # SIGKILL: no graceful hand-over
        procs[victim].wait()
        t0 = time.monotonic()
        wait_for("takeover", lambda: set(owners(state_dir).values()) == {survivor}, timeout=20)
        took = time.monotonic() - t0
        assert took <= ttl + 3, f"takeover took {took:.1f} s with a {ttl} s lease"
        # the survivor now heals what the dead replica used to look after
        ok(cli("fake", "rm", names[0], "vm/cache", state_dir=state_dir))
        wait_for("drift healed by the survivor", lambda: "vm/cache" in tagged(state_dir, names[0]))
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=20) == 0
