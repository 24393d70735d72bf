"""Issue 11, "apply exactly what was approved", through the real CLI.

The prompt tests run ``cloudlet sync`` on a real pseudo-terminal (stdin,
and stderr or stdout, on a pty from ``os.openpty``) and change the
simulated cloud with ``cloudlet fake`` while the prompt waits. Before the
fix the answer ``y`` applied whatever a fresh observation planned, drift
that arrived meanwhile included, and ``sync --json`` on a terminal did not
ask at all.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import struct
import subprocess
import termios
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    NO_ROUTER,
    cli,
    cli_argv,
    cli_env,
    cli_json,
    describe,
    edited_copy,
    fake_ls,
    fake_ls_unknown,
    ok,
)

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\r")
NAME = "berlin-1"
PROMPT = "Apply these changes? [y/N]"


class Terminal:
    """A CLI process whose stdin (and stderr, and stdout unless piped) is a pty."""

    def __init__(self, state_dir: Path, *args: str | Path, pipe_stdout: bool = False) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        self.proc = subprocess.Popen(
            cli_argv(state_dir, *args),
            stdin=slave,
            stdout=subprocess.PIPE if pipe_stdout else slave,
            stderr=slave,
            env=cli_env({"TERM": "xterm"}),
            cwd=state_dir,
            start_new_session=True,
        )
        os.close(slave)
        self.master = master
        self.raw = b""

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw.decode(errors="replace"))

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: every holder of the pty's other end is gone
            chunk = b""
        self.raw += chunk
        return bool(chunk)

    def expect(self, needle: str, count: int = 1, timeout: float = 60.0) -> str:
        """Wait until ``needle`` has appeared ``count`` times in all output."""
        deadline = time.monotonic() + timeout
        while self.text.count(needle) < count:
            if time.monotonic() > deadline or not self._read(0.2):
                if self.text.count(needle) >= count:
                    break
                raise AssertionError(f"no {needle!r} (x{count}) in:\n{self.text}")
        return self.text

    def answer(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def finish(self, timeout: float = 60.0) -> tuple[int, str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._read(0.2):
            pass
        code = self.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        stdout = self.proc.stdout.read().decode() if self.proc.stdout is not None else ""
        os.close(self.master)
        return code, self.text, stdout

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def terminals() -> Any:
    started: list[Terminal] = []

    def start(state_dir: Path, *args: str | Path, pipe_stdout: bool = False) -> Terminal:
        term = Terminal(state_dir, *args, pipe_stdout=pipe_stdout)
        started.append(term)
        return term

    yield start
    for term in started:
        term.kill()


def cloud(state_dir: Path) -> list[tuple[str, str, str]]:
    """The simulated cloud, as (uid, id, attributes): what must not change."""
    rows = fake_ls(state_dir, NAME)
    return sorted((r["uid"], r["id"], json.dumps(r["attrs"], sort_keys=True)) for r in rows)


def flavor(state_dir: Path, rid: str) -> str:
    (row,) = [r for r in fake_ls(state_dir, NAME) if r["id"] == rid]
    return str(row["attrs"]["flavor"])


def fake(state_dir: Path, *args: str) -> None:
    ok(cli("fake", *args, state_dir=state_dir))


def drifted(state_dir: Path) -> None:
    """Converged, then one VM's flavor changed out of band: a small plan."""
    ok(cli("sync", NO_ROUTER, state_dir=state_dir))
    fake(state_dir, "set", NAME, "vm/game", "flavor=m1.large")


# -- the prompt ----------------------------------------------------------------------


def test_the_prompt_no_changes_nothing(state_dir: Path, terminals: Any) -> None:
    term = terminals(state_dir, "sync", NO_ROUTER)
    term.expect(PROMPT)
    term.answer("n")
    code, text, _ = term.finish()
    assert code == 1, text
    assert "cancelled; nothing changed" in text
    fake_ls_unknown(state_dir, NAME)
    assert cli("get", NAME, state_dir=state_dir).returncode == 1  # nothing stored either


def test_the_prompt_yes_applies_the_plan_shown(state_dir: Path, terminals: Any) -> None:
    term = terminals(state_dir, "sync", NO_ROUTER)
    shown = term.expect(PROMPT)
    assert "32 to create" in shown
    term.answer("y")
    code, text, _ = term.finish()
    assert code == 0, text
    assert "converged" in text and "32 created" in text


def test_drift_while_the_prompt_waits_is_shown_and_asked_again_and_no_leaves_it(
    state_dir: Path, terminals: Any
) -> None:
    drifted(state_dir)
    term = terminals(state_dir, "sync", NO_ROUTER)
    first = term.expect(PROMPT)
    assert "vm/game" in first and "vm/chat" not in first
    fake(state_dir, "rm", NAME, "vm/chat")  # arrives before the answer
    before = cloud(state_dir)
    term.answer("y")
    again = term.expect(PROMPT, count=2)
    assert "the plan changed since you approved it" in again
    assert "+ create vm/chat" in again and "not approved" in again
    term.answer("n")
    code, text, _ = term.finish()
    assert code == 1, text
    assert "cancelled; nothing changed" in text
    assert cloud(state_dir) == before  # nothing of the first "y" was applied
    assert flavor(state_dir, "vm/game") == "m1.large"


def test_the_changed_plan_once_approved_is_applied(state_dir: Path, terminals: Any) -> None:
    drifted(state_dir)
    term = terminals(state_dir, "sync", NO_ROUTER)
    term.expect(PROMPT)
    fake(state_dir, "set", NAME, "vm/game", "flavor=m1.xlarge")  # the same action, other values
    term.answer("y")
    again = term.expect(PROMPT, count=2)
    assert "~ vm/game" in again and "m1.xlarge" in again
    term.answer("y")
    code, text, _ = term.finish()
    assert code == 0, text
    assert flavor(state_dir, "vm/game") == "m1.small"


def test_sync_json_on_a_terminal_asks_on_stderr_and_keeps_stdout_json(
    state_dir: Path, terminals: Any
) -> None:
    term = terminals(state_dir, "sync", NO_ROUTER, "--json", pipe_stdout=True)
    term.expect(PROMPT)
    term.answer("y")
    code, text, stdout = term.finish()
    assert code == 0, text
    summary = json.loads(stdout)
    assert summary["outcome"] == "converged" and len(summary["actions"]) == 32
    assert "32 to create" in text and "32 to create" not in stdout  # the plan went to stderr


def test_sync_yes_on_a_terminal_does_not_ask(state_dir: Path, terminals: Any) -> None:
    term = terminals(state_dir, "sync", NO_ROUTER, "--yes")
    code, text, _ = term.finish()
    assert code == 0, text
    assert PROMPT not in text


# -- no terminal ----------------------------------------------------------------------


def test_sync_json_without_a_terminal_needs_yes(state_dir: Path) -> None:
    proc = cli("sync", NO_ROUTER, "--json", state_dir=state_dir)
    assert proc.returncode == 1, describe(proc)
    assert proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith("cloudlet: ") and "--yes" in line
    fake_ls_unknown(state_dir, NAME)


# -- saved plans ------------------------------------------------------------------------


def save(state_dir: Path, flag: str = "-o") -> Path:
    path = state_dir.parent / "berlin.plan"
    proc = cli("plan", NO_ROUTER, flag, path, state_dir=state_dir)
    assert proc.returncode in (0, 2), describe(proc)
    return path


@pytest.mark.parametrize("flag", ["-o", "--out"])
def test_a_fresh_saved_plan_is_applied_exactly(state_dir: Path, flag: str) -> None:
    drifted(state_dir)
    path = save(state_dir, flag)
    actions = json.loads(path.read_text())["cloudlets"][0]["actions"]
    planned = {(a["op"], a["id"]) for a in actions}
    assert ("replace", "vm/game") in planned
    summary = cli_json("sync", "--plan", path, "--json", state_dir=state_dir)  # no --yes needed
    assert summary["outcome"] == "converged"
    assert {(s["op"], s["id"]) for s in summary["actions"]} == planned
    assert flavor(state_dir, "vm/game") == "m1.small"


def test_a_saved_plan_is_stale_once_the_desired_revision_moved(state_dir: Path) -> None:
    drifted(state_dir)
    path = save(state_dir)
    relabelled = edited_copy(NO_ROUTER, state_dir.parent / "b.yaml", "tier: edge", "tier: core")
    ok(cli("apply", relabelled, state_dir=state_dir))  # a new desired revision, stored meanwhile
    before = cloud(state_dir)
    proc = cli("sync", "--plan", path, state_dir=state_dir)
    assert proc.returncode == 1, describe(proc)
    (line,) = proc.stderr.splitlines()
    moved = re.search(r"desired revision of berlin-1 moved \(was (\d+), now (\d+)\)", line)
    assert "is stale" in line and moved is not None, line
    assert int(moved[2]) > int(moved[1])  # revisions count the whole store's writes
    assert cloud(state_dir) == before
    assert "tier: core" in ok(cli("get", NAME, state_dir=state_dir)).stdout  # not overwritten


def test_a_saved_plan_is_stale_once_the_observed_state_moved(state_dir: Path) -> None:
    drifted(state_dir)
    path = save(state_dir)
    fake(state_dir, "rm", NAME, "vm/chat")
    before = cloud(state_dir)
    proc = cli("sync", "--plan", path, state_dir=state_dir)
    assert proc.returncode == 1, describe(proc)
    (line,) = proc.stderr.splitlines()
    assert "is stale" in line and "observed state of berlin-1 moved" in line
    assert "create vm/chat" in line
    assert cloud(state_dir) == before


def test_a_harmless_change_does_not_make_a_saved_plan_stale(state_dir: Path) -> None:
    """A cloud-computed attribute (not one the engine sets) changed: the same plan."""
    drifted(state_dir)
    path = save(state_dir)
    fake(state_dir, "set", NAME, "vm/game", "status=REBOOTING")
    ok(cli("sync", "--plan", path, state_dir=state_dir))


@pytest.mark.parametrize(
    ("content", "says"),
    [("not json at all", "not a saved plan"), ('{"format": "cloudlet-plan/0"}', "make it again")],
)
def test_a_bad_saved_plan_is_one_line(state_dir: Path, content: str, says: str) -> None:
    path = state_dir.parent / "bad.plan"
    path.write_text(content)
    proc = cli("sync", "--plan", path, state_dir=state_dir)
    assert proc.returncode == 1, describe(proc)
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"cloudlet: {path}") and says in line


def test_plan_out_into_a_missing_folder_is_one_line(state_dir: Path) -> None:
    proc = cli("plan", NO_ROUTER, "-o", state_dir / "nope" / "p.plan", state_dir=state_dir)
    assert proc.returncode == 1, describe(proc)
    (line,) = proc.stderr.splitlines()
    assert "nope" in line and "does not exist" in line
