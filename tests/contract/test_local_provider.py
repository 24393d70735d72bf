"""The local provider against the shared provider contract: real namespaces,
bridges and daemons on this host (root). Each test's state dir is its own,
so its names never meet another run's; close() destroys what is left."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from provider_contract import Capabilities, ProviderHarness, provider_contract_tests

from cloudlet.model.resources import Observed
from cloudlet.providers.local.provider import LocalProvider, Site

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


class LocalConsole:
    """An operator's hands on the host: objects removed or edited beside the provider."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.owners: set[str] = set()

    def _provider(self) -> LocalProvider:
        return LocalProvider(self.state_dir)

    def remove(self, owner: str, uid: str, /) -> object:
        self.owners.add(owner)
        provider = self._provider()
        record = Site(provider.base, owner).records.get(uid)
        if record is not None:
            provider.delete(owner, Observed(uid, record.id, record.kind, record.attrs, ()))
        return None

    def set_attr(self, owner: str, uid: str, key: str, value: str, /) -> object:
        records = Site(self._provider().base, owner).records
        record = records.get(uid)
        assert record is not None, uid
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        record.attrs[key] = tuple(parsed) if isinstance(parsed, list) else parsed
        records.put(record)
        return None

    def close(self) -> None:
        provider = self._provider()
        owners = {p.name for p in provider.base.iterdir()} if provider.base.is_dir() else set()
        for owner in owners | self.owners:
            for obs in sorted(provider.observe(owner), key=_teardown_order):
                provider.delete(owner, obs)


def _teardown_order(obs: Observed) -> int:
    order = ["lb-listener", "lb", "floating-ip", "k8s-node", "vm", "vip", "port", "router"]
    order += ["subnet", "security-group"]
    return order.index(obs.kind) if obs.kind in order else len(order)


class LocalHarness(ProviderHarness):
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        super().__init__(lambda: LocalProvider(state_dir), LocalConsole(state_dir))

    def close(self) -> None:
        super().close()
        shutil.rmtree(self.state_dir, ignore_errors=True)


def make_local_harness() -> LocalHarness:
    return LocalHarness(Path(tempfile.mkdtemp(prefix="cloudlet-local-")))


TestLocalContract = provider_contract_tests(
    make_local_harness,
    caps=Capabilities(),
)
