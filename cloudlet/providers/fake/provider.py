"""The ``fake`` platform's provider: the Provider seam over ``FakeCloud``.

It is as thin as a real provider should be: the cloud keeps the tags (owner
and id) and its create never makes a second object of one name (only the
operator's console ``copy`` does), so create-is-adopt and
delete-of-missing-is-success come from the cloud's own rules, and a new
provider instance after a crash finds everything again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cloudlet.model.resources import Observed, Resource
from cloudlet.providers.fake.cloud import FakeCloud
from cloudlet.providers.fake.rules import disk_shrink


class FakeProvider:
    def __init__(self, state_dir: Path | str, **knobs: Any) -> None:
        """``knobs``: the simulated cloud's latency and faults (see ``FakeCloud``)."""
        self.cloud = FakeCloud.for_state_dir(state_dir, **knobs)

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
