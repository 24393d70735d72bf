"""A thread dying of an exception is one logged line, never a traceback
(unless --verbose): the CLI's promise holds for library threads too."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from cloudlet.cmd.main import report_thread_crashes


@pytest.fixture
def restored_hook() -> Iterator[None]:
    saved = threading.excepthook
    yield
    threading.excepthook = saved


def _die_in_a_thread() -> None:
    def boom() -> None:
        raise ValueError("Cannot invoke RPC: Channel closed!")

    t = threading.Thread(target=boom, name="pyetcd_watch_1")
    t.start()
    t.join()


@pytest.mark.parametrize("verbose", [False, True])
def test_a_dying_thread_is_logged_in_one_line(
    restored_hook: None,
    verbose: bool,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    report_thread_crashes(verbose)
    with caplog.at_level(logging.ERROR, logger="cloudlet"):
        _die_in_a_thread()
    assert "Traceback" not in capsys.readouterr().err
    [record] = [r for r in caplog.records if r.name == "cloudlet"]
    assert record.getMessage() == (
        "thread pyetcd_watch_1 died: ValueError: Cannot invoke RPC: Channel closed!"
    )
    assert bool(record.exc_info) is verbose
