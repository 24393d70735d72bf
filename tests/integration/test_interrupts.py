"""Ctrl-C and SIGTERM during a real ``cloudlet sync``, and usage errors.

The sync runs on the simulated cloud with a latency long enough that the
signal lands mid-way. Ctrl-C is typed into a real pseudo-terminal (the
child's controlling terminal), so the terminal's line discipline delivers
SIGINT as it would to an operator's shell; SIGTERM comes through a pipe,
as from a supervisor.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import termios
import threading
import time
from pathlib import Path

from conftest import (
    cli,
    cli_argv,
    cli_env,
    cli_json,
    creates,
    describe,
    duplicates,
    exposed_vms_spec,
    fake_ls,
    fake_object_count,
    ok,
    plan_json,
    spawn,
    tagged_ids,
)

NAME = "ctrlc"
VMS = 6
HIDE, SHOW = "\x1b[?25l", "\x1b[?25h"


def write_spec(path: Path, latency_ms: int) -> Path:
    return exposed_vms_spec(path, NAME, VMS, latency_ms, "10.60.0.0/24")


def count_objects(state_dir: Path) -> int:
    return fake_object_count(state_dir, NAME)


def wait_for_objects(proc: subprocess.Popen[bytes] | subprocess.Popen[str], state: Path) -> None:
    """Until the first object exists: calls are in flight and most of the
    plan has not started."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if count_objects(state) >= 1:
            return
        time.sleep(0.01)
    raise AssertionError(f"the sync ended or made nothing (exit {proc.poll()})")


class Terminal:
    """``cloudlet`` on a fresh pseudo-terminal that is its controlling tty."""

    def __init__(self, *args: str | Path, state_dir: Path) -> None:
        master, slave = os.openpty()
        self.master = master

        def own_the_tty() -> None:  # in the child: a session whose terminal this is
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(
            cli_argv(state_dir, *args),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=cli_env({"TERM": "xterm-256color"}),
            cwd=state_dir,
            preexec_fn=own_the_tty,
        )
        os.close(slave)
        self.chunks: list[bytes] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the child closed its side
                return
            if not data:
                return
            self.chunks.append(data)

    def ctrl_c(self) -> None:
        os.write(self.master, b"\x03")

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)
        os.close(self.master)
        return code

    @property
    def output(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")


def expected_ids(spec: Path, tmp_path: Path) -> list[str]:
    empty = tmp_path / "empty-state"
    empty.mkdir(exist_ok=True)
    ids = creates(plan_json(spec, empty, code=2))
    assert len(ids) == len(set(ids)) > 20
    return ids


def assert_resync_converges(spec: Path, state: Path, expected: list[str]) -> None:
    """The next sync finishes the job: nothing duplicated, nothing missing."""
    fast = spec.with_name("fast.yaml")
    fast.write_text(re.sub(r"latencyMs: \d+", "latencyMs: 0", spec.read_text()))
    summary = cli_json("sync", fast, "--yes", "--json", state_dir=state)
    assert summary["outcome"] == "converged", summary
    ids = tagged_ids(fake_ls(state, NAME))
    assert duplicates(ids) == [] and sorted(ids) == sorted(expected)
    ok(cli("plan", fast, state_dir=state), 0)


def last_sync(state: Path) -> dict[str, object]:
    status = cli_json("status", NAME, "--json", state_dir=state)
    conditions = {c["type"]: c for c in status["conditions"]}
    return {"lastSync": status["lastSync"], **conditions}


def test_ctrl_c_finishes_running_calls_records_interrupted_and_shows_the_cursor(
    tmp_path: Path, state_dir: Path
) -> None:
    spec = write_spec(tmp_path / "ctrlc.yaml", latency_ms=600)
    expected = expected_ids(spec, tmp_path)
    term = Terminal("sync", spec, "--yes", state_dir=state_dir)
    wait_for_objects(term.proc, state_dir)
    term.ctrl_c()
    code = term.wait(timeout=30)
    out = term.output
    assert code == 130, out
    assert "Traceback" not in out and "internal error" not in out, out
    assert out.rfind(SHOW) > out.rfind(HIDE) >= 0, repr(out[-400:])  # the bar hid it
    line = next(s for s in out.splitlines() if s.startswith("interrupted: "))
    assert "actions done" in line and "not started" in line and "cloudlet sync" in line, line
    assert count_objects(state_dir) < len(expected)  # it stopped mid-way

    seen = last_sync(state_dir)
    assert seen["lastSync"]["outcome"] == "interrupted", seen  # type: ignore[index]
    assert seen["Synced"]["reason"] == "Interrupted", seen  # type: ignore[index]
    assert seen["Degraded"]["status"] == "False", seen  # type: ignore[index]
    assert_resync_converges(spec, state_dir, expected)


def test_sigterm_in_a_pipe_exits_143_and_records_interrupted_not_failed(
    tmp_path: Path, state_dir: Path
) -> None:
    spec = write_spec(tmp_path / "ctrlc.yaml", latency_ms=600)
    expected = expected_ids(spec, tmp_path)
    proc = spawn("sync", spec, "--yes", state_dir=state_dir)
    wait_for_objects(proc, state_dir)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, f"{out}\n{err}"
    assert "Traceback" not in out + err and "failed" not in out + err, f"{out}\n{err}"
    assert "blocked" not in out, out
    (line,) = [s for s in err.splitlines() if s.startswith("interrupted: ")]
    assert line.endswith("to finish"), line
    seen = last_sync(state_dir)
    assert seen["lastSync"]["outcome"] == "interrupted", seen  # type: ignore[index]
    assert seen["Degraded"]["reason"] != "SyncFailed", seen  # type: ignore[index]
    assert_resync_converges(spec, state_dir, expected)


def test_a_second_ctrl_c_exits_at_once_and_the_journal_keeps_the_next_sync_safe(
    tmp_path: Path, state_dir: Path
) -> None:
    """Each call commits halfway through its 4 s: the first object appears
    with the other calls of its wave committed and 2 s from answering."""
    spec = write_spec(tmp_path / "ctrlc.yaml", latency_ms=4000)
    expected = expected_ids(spec, tmp_path)
    term = Terminal("sync", spec, "--yes", state_dir=state_dir)
    wait_for_objects(term.proc, state_dir)
    term.ctrl_c()
    time.sleep(0.1)
    t0 = time.monotonic()
    term.ctrl_c()
    code = term.wait(timeout=30)
    took = time.monotonic() - t0
    out = term.output
    assert code == 130, out
    assert took < 1.0, f"exited {took:.2f} s after the second Ctrl-C"
    assert out.rfind(SHOW) > out.rfind(HIDE) >= 0, repr(out[-400:])
    assert "Traceback" not in out, out
    assert in_flight(state_dir), "the calls cut off left no journal entries"
    assert_resync_converges(spec, state_dir, expected)
    assert in_flight(state_dir) == []


def in_flight(state_dir: Path) -> list[str]:
    """The steps the journal holds as begun and never ended."""
    from cloudlet.store.records import StateRepo
    from cloudlet.store.sqlite import open_store

    store = open_store(state_dir)
    try:
        return sorted(j.step for j in StateRepo(store).journal_pending(NAME))
    finally:
        store.close()


def test_ctrl_c_at_the_confirmation_prompt_ends_at_once_and_stores_nothing(
    tmp_path: Path, state_dir: Path
) -> None:
    """Nothing runs yet: the guard is not armed, so Ctrl-C is not deferred."""
    spec = write_spec(tmp_path / "ctrlc.yaml", latency_ms=0)
    term = Terminal("sync", spec, state_dir=state_dir)
    deadline = time.monotonic() + 30
    while "[y/N]" not in term.output and time.monotonic() < deadline:
        time.sleep(0.02)
    term.ctrl_c()
    assert term.wait(timeout=10) == 130, term.output
    assert term.output.endswith("cloudlet: interrupted\r\n"), repr(term.output[-200:])
    assert count_objects(state_dir) == 0
    assert cli("get", NAME, state_dir=state_dir).returncode == 1  # no desired state stored


def test_usage_errors_exit_1_with_one_line_and_a_pointer_to_help(state_dir: Path) -> None:
    for argv, said, command in (
        (("sync",), "sync: the following arguments are required: FILE", "cloudlet sync"),
        (("frobnicate",), "argument COMMAND: invalid choice: 'frobnicate'", "cloudlet"),
        (("status", "a", "b"), "unrecognized arguments: b", "cloudlet"),
        (("fake", "ls"), "fake ls: the following arguments are required: NAME", "cloudlet fake ls"),
        (
            ("sync", "x.yaml", "--parallelism", "many"),
            "sync: argument --parallelism",
            "cloudlet sync",
        ),
        (("--log-format", "xml", "sync", "x.yaml"), "argument --log-format", "cloudlet"),
    ):
        proc = cli(*argv, state_dir=state_dir)
        assert proc.returncode == 1, describe(proc)
        assert proc.stdout == "", describe(proc)
        (line,) = proc.stderr.splitlines()
        assert line.startswith(f"cloudlet: {said}"), describe(proc)
        assert line.endswith(f"(see {command} --help)"), describe(proc)


def test_lb_agent_usage_errors_exit_1(state_dir: Path, tmp_path: Path) -> None:
    proc = cli("lb-agent", state_dir=state_dir)  # --source and --runtime-dir missing
    assert proc.returncode == 1, describe(proc)
    assert len(proc.stderr.splitlines()) == 1 and "--help" in proc.stderr, describe(proc)
    bad = cli("lb-agent", "--source", "nope", "--runtime-dir", tmp_path, state_dir=state_dir)
    assert bad.returncode == 1, describe(bad)
    light = subprocess.run(
        [*cli_argv(None)[:2], "cloudlet.agent"],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert light.returncode == 1 and len(light.stderr.splitlines()) == 1, describe(light)
