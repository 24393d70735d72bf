"""Issue 13, finding 3: a one-shot command collects less often; the daemon
and the servers keep Python's thresholds, and nobody turns the collector off."""

from __future__ import annotations

import argparse
import gc

import pytest

from cloudlet.cmd import commands
from cloudlet.cmd.main import ONE_SHOT, ONE_SHOT_GC, main, one_shot_gc


def test_a_one_shot_command_runs_with_rarer_collections_then_restores_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = gc.get_threshold()
    seen: list[tuple[tuple[int, ...], bool]] = []

    def handler(_: argparse.Namespace) -> int:
        seen.append((gc.get_threshold(), gc.isenabled()))
        return 0

    monkeypatch.setattr(commands, "cmd_validate", handler)
    assert main(["validate", "any.yaml"]) == 0
    assert seen == [(ONE_SHOT_GC, True)]
    assert gc.get_threshold() == before


def test_the_thresholds_come_back_when_the_command_fails() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), one_shot_gc("plan"):
        raise RuntimeError("boom")
    assert gc.get_threshold() == before


@pytest.mark.parametrize("command", ["reconcile", "relay", "relay-agent", "lb-agent", "fake"])
def test_long_running_commands_keep_pythons_thresholds(command: str) -> None:
    before = gc.get_threshold()
    assert command not in ONE_SHOT
    with one_shot_gc(command):
        assert gc.get_threshold() == before
