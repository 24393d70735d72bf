"""The daemon as an operator runs it: what it logs (text and JSON), what its
metrics endpoint serves (series of a destroyed cloudlet gone, waiting work,
build info, process metrics, health probes), and the flags it refuses.

Real processes, the fake platform and a temporary state directory; drift is
made out of band with ``cloudlet fake``, as an operator would see it.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import ROUTER, cli, describe, ok, spawn

from cloudlet.providers.fake import FakeCloud

NAME = "munich-2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def tagged(state_dir: Path) -> set[str]:
    cloud = FakeCloud(state_dir / "fake-cloud.db")
    try:
        return {o.id for o in cloud.list_objects(NAME) if o.id}
    finally:
        cloud.close()


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def up(port: int) -> bool:
    try:
        return get(port, "/healthz")[0] == 200
    except OSError:
        return False


def stop(proc: subprocess.Popen[str]) -> str:
    """SIGTERM, as systemd stops it; returns its stderr (the log)."""
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    return err


def heal_one_vm(state_dir: Path, *flags: str) -> str:
    """Store a cloudlet, let a daemon converge it, delete a VM out of band,
    wait for the heal, stop the daemon; its log."""
    ok(cli("apply", ROUTER, state_dir=state_dir))
    port = free_port()
    proc = spawn(
        *flags, "reconcile", "--resync", "1", "--metrics-port", str(port), state_dir=state_dir
    )
    try:
        wait_for("first convergence", lambda: len(tagged(state_dir)) >= 23)
        ok(cli("fake", "rm", NAME, "vm/cache", state_dir=state_dir))
        wait_for("the VM healed", lambda: "vm/cache" in tagged(state_dir))
        time.sleep(0.5)  # the heal's summary line follows its action line
    finally:
        log = stop(proc)
    return log


def test_text_log_says_each_action_and_each_reconcile_at_info(state_dir: Path) -> None:
    log = heal_one_vm(state_dir)
    lines = log.splitlines()
    healed = [ln for ln in lines if "created vm/cache (healed drift)" in ln]
    assert len(healed) == 1, log
    assert healed[0].startswith(f"INFO cloudlet.daemon: cloudlet {NAME}: created vm/cache")
    assert healed[0].rstrip().endswith(" s"), healed[0]  # its duration
    first = [ln for ln in lines if "created vm/cache (new revision 1)" in ln]
    assert len(first) == 1, log
    summaries = [ln for ln in lines if "revision 1 converged (healed drift): 1 action in" in ln]
    assert len(summaries) == 1, log
    assert any("revision 1 converged (new revision 1): 23 actions in" in ln for ln in lines), log
    # a resync that finds nothing to do is not news at INFO
    assert not any("0 actions" in ln for ln in lines), log


def test_json_log_carries_the_facts_in_fields(state_dir: Path) -> None:
    log = heal_one_vm(state_dir, "--log-format", "json")
    docs = [json.loads(line) for line in log.splitlines()]
    assert all({"level", "logger", "message", "time"} <= set(d) for d in docs), log
    healed = [d for d in docs if d.get("id") == "vm/cache" and d.get("reason") == "healed drift"]
    assert len(healed) == 1, log
    line = healed[0]
    assert line["level"] == "info" and line["logger"] == "cloudlet.daemon"
    assert line["cloudlet"] == NAME and line["op"] == "create" and line["outcome"] == "ok"
    assert line["revision"] == 1
    assert isinstance(line["duration"], float) and 0 <= line["duration"] < 10
    summary = [d for d in docs if d.get("actions") == 1 and d.get("reason") == "healed drift"]
    assert len(summary) == 1, log
    assert summary[0]["outcome"] == "converged" and summary[0]["cloudlet"] == NAME
    assert summary[0]["revision"] == 1 and isinstance(summary[0]["duration"], float)


@pytest.fixture
def daemon(state_dir: Path) -> Iterator[int]:
    port = free_port()
    proc = spawn("reconcile", "--resync", "30", "--metrics-port", str(port), state_dir=state_dir)
    try:
        wait_for("the metrics endpoint", lambda: up(port))
        yield port
    finally:
        stop(proc)


def series(text: str, name: str) -> list[str]:
    return [
        ln for ln in text.splitlines() if ln.startswith(name + "{") or ln.startswith(name + " ")
    ]


def test_metrics_endpoint_probes_and_series_of_a_destroyed_cloudlet(
    daemon: int, state_dir: Path
) -> None:
    port = daemon
    assert get(port, "/healthz") == (200, "ok\n")
    wait_for("ready", lambda: get(port, "/readyz")[0] == 200)
    assert get(port, "/readyz")[1] == "ready\n"
    for path in ("/", "/metrics/", "/metricsx", "/favicon.ico"):
        assert get(port, path)[0] == 404, path
    status, text = get(port, "/metrics?x=1")
    assert status == 200
    assert 'cloudlet_build_info{version="' in text
    assert series(text, "process_cpu_seconds_total"), text[:2000]
    assert series(text, "python_info"), text[:2000]

    ok(cli("apply", ROUTER, state_dir=state_dir))
    wait_for("first convergence", lambda: len(tagged(state_dir)) >= 23)
    mine = f'cloudlet="{NAME}"'
    wait_for("its series", lambda: mine in get(port, "/metrics")[1])
    text = get(port, "/metrics")[1]
    # converged, its next look 30 s away: nothing is waiting now
    assert series(text, "cloudlet_queue_depth") == ["cloudlet_queue_depth 0.0"], text

    ok(cli("destroy", NAME, "--yes", state_dir=state_dir))
    wait_for("its series gone", lambda: mine not in get(port, "/metrics")[1], timeout=10)


def one_line_failure(*args: str, state_dir: Path) -> str:
    proc = cli("reconcile", *args, state_dir=state_dir, timeout=20)
    assert proc.returncode == 1, describe(proc)
    assert proc.stdout == "", describe(proc)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, describe(proc)
    assert "internal error" not in lines[0] and "Traceback" not in proc.stderr
    assert lines[0].startswith("cloudlet: "), describe(proc)
    return lines[0]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--poll", "0"), "--poll must be a positive number of seconds"),
        (("--poll", "-1"), "--poll must be a positive number of seconds"),
        (("--resync", "nan"), "--resync must be a positive number of seconds, not nan"),
        (("--resync", "inf"), "--resync must be a positive number of seconds, not inf"),
        (("--lease-ttl", "nan"), "--lease-ttl must be a positive number of seconds"),
        (("--workers", "0"), "--workers must be at least 1"),
        (("--metrics-port", "70000"), "--metrics-port must be a port number (1-65535), not 70000"),
        (("--metrics-port", "0"), "--metrics-port must be a port number (1-65535), not 0"),
        (("--replica-id", ""), "--replica-id must be a non-empty name"),
    ],
)
def test_bad_flags_are_refused_in_one_line(
    args: tuple[str, ...], said: str, state_dir: Path
) -> None:
    assert said in one_line_failure(*args, state_dir=state_dir)


def test_a_metrics_port_in_use_is_named(state_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line_failure("--metrics-port", str(port), state_dir=state_dir)
    assert line == f"cloudlet: metrics port 127.0.0.1:{port} is in use"


def test_a_failed_action_is_told_once_and_the_reconcile_summed_up_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One reconcile in which one create fails for good: the action's line
    (with the cloud's error) and the reconcile's summary (with the retry)
    are the only two lines at WARNING; neither the engine nor the retry
    repeats it."""
    import logging

    from cloudlet.engine.daemon import Daemon
    from cloudlet.errors import ProviderError
    from cloudlet.model.codec import unstructure
    from cloudlet.model.load import load_file
    from cloudlet.model.resources import Observed, Resource
    from cloudlet.providers.fake import FakeProvider
    from cloudlet.shepherd.metrics import Metrics
    from cloudlet.store.records import StateRepo
    from cloudlet.store.sqlite import open_store

    class NoQuota(FakeProvider):
        def create(self, owner: str, resource: Resource) -> Observed:
            if resource.id == "vm/cache":
                raise ProviderError("quota exceeded: instances", transient=False)
            return super().create(owner, resource)

    repo = StateRepo(open_store(tmp_path))
    cloudlet = load_file(str(ROUTER))[0]
    repo.put_desired(NAME, unstructure(cloudlet), at=time.time())
    daemon = Daemon(repo, lambda c: NoQuota(tmp_path), Metrics("test"))
    caplog.set_level(logging.INFO, logger="cloudlet")  # the daemon's default
    daemon._reconcile_and_requeue(NAME)
    repo.store.close()
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    told = [r for r in caplog.records if "quota exceeded" in r.getMessage()]
    assert len(told) == 1 and told[0].levelno == logging.WARNING, caplog.text
    assert told[0].getMessage().startswith(f"cloudlet {NAME}: failed to create vm/cache")
    retry = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retry) == 1, caplog.text
    assert f"cloudlet {NAME}: revision 1 failed (new revision 1): " in retry[0].getMessage()
    assert "1 failed" in retry[0].getMessage()
    assert [r.getMessage() for r in loud] == [told[0].getMessage(), retry[0].getMessage()]
    assert getattr(retry[0], "outcome", None) == "failed"
    assert getattr(told[0], "id", None) == "vm/cache"
