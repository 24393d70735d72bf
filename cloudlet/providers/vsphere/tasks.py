"""Waiting for vCenter tasks without spinning the CPU.

A task's ``info`` is read through the PropertyCollector (one call), first at
once, since the simulator and many quick vCenter operations are done by
then, and afterwards with sleeps that double from 20 ms up to one second.
One waiting thread therefore costs at most one small call a second, and the
engine's worker threads never share a collector (``WaitForUpdatesEx`` on a
shared collector would cancel each other's waits).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from cloudlet.errors import ProviderError

FIRST_PAUSE = 0.02
MAX_PAUSE = 1.0


def wait_for(
    read_info: Callable[[], Any],
    what: str,
    timeout: float,
    *,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Any:
    """The task's result; its fault is raised as the SDK fault (callers translate it)."""
    deadline = clock() + timeout
    pause = FIRST_PAUSE
    while True:
        info: Any = read_info()
        state = getattr(info, "state", None)
        if state == "success":
            return getattr(info, "result", None)
        if state == "error":
            raise info.error
        if clock() >= deadline:
            raise ProviderError(f"{what}: task still {state} after {timeout:.0f}s", transient=True)
        sleep(min(pause, max(0.0, deadline - clock())))
        pause = min(pause * 2, MAX_PAUSE)
