"""The ``fake`` platform's provider: the Provider seam over ``FakeCloud``.

It is as thin as a real provider should be: the cloud keeps the tags (owner
and id) and its create never makes a second object of one name (only the
operator's console ``copy`` does), so create-is-adopt and
delete-of-missing-is-success come from the cloud's own rules, and a new
provider instance after a crash finds everything again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from cloudlet.model.resources import Observed, Resource
from cloudlet.providers.fake.cloud import FakeCloud
from cloudlet.providers.fake.rules import disk_shrink


class FakeProvider:
    def __init__(
        self,
        state_dir: Path | str,
        *,
        latency_ms: float = 0,
        jitter_ms: float = 0,
        failure_rate: float = 0.0,
        seed: int = 0,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.cloud = FakeCloud.for_state_dir(
            state_dir,
            latency_ms=latency_ms,
            jitter_ms=jitter_ms,
            failure_rate=failure_rate,
            seed=seed,
            sleep=sleep,
        )

    def observe(self, owner: str) -> list[Observed]:
        return self.cloud.observe(owner)

    def create(self, owner: str, resource: Resource) -> Observed:
        return self.cloud.create(owner, resource.kind, resource.id, resource.attrs, resource.deps)

    def update(self, owner: str, resource: Resource, current: Observed) -> Observed:
        return self.cloud.update(owner, current.uid, resource.attrs, resource.deps)

    def delete(self, owner: str, current: Observed) -> None:
        self.cloud.delete(owner, current.uid)

    def replacement_reason(self, resource: Resource, current: Observed) -> str | None:
        return disk_shrink(resource.kind, current.attrs, resource.attrs)

    def close(self) -> None:
        self.cloud.close()
