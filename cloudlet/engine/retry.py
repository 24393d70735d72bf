"""Retries with exponential backoff and full jitter for transient failures.

Clocks and sleeps are injected so that tests run without real waiting and a
seeded random source makes the jitter reproducible.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

import attrs

from cloudlet.errors import ProviderError

T = TypeVar("T")


@attrs.frozen
class RetryPolicy:
    attempts: int = 6
    base: float = 0.05
    cap: float = 2.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Full jitter (AWS architecture blog): uniform in [0, min(cap, base*2^n)]."""
        return rng.uniform(0, min(self.cap, self.base * (2**attempt)))


@attrs.define
class Attempts:
    count: int = 0


def call_with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    attempts: Attempts | None = None,
) -> T:
    """Run ``fn``; retry transient ProviderErrors; re-raise the last one."""
    rng = rng or random.Random()
    tally = attempts or Attempts()
    while True:
        tally.count += 1
        try:
            return fn()
        except ProviderError as err:
            if not err.transient or tally.count >= policy.attempts:
                raise
            sleep(policy.delay(tally.count - 1, rng))
