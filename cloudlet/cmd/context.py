"""Where the command line finds its store, providers and engine."""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from cloudlet.engine.sync import Engine, SyncListener, SyncOptions
from cloudlet.errors import CloudletError, NotFound
from cloudlet.model.codec import structure
from cloudlet.model.spec import Cloudlet, Platform
from cloudlet.providers.base import Provider
from cloudlet.providers.registry import make_provider
from cloudlet.store.records import StateRepo
from cloudlet.store.sqlite import open_store


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "cloudlet"


@attrs.define
class Context:
    state_dir: Path
    etcd: str | None = None
    _repo: StateRepo | None = None
    _providers: dict[str, Provider] = attrs.field(factory=dict)

    @classmethod
    def from_args(cls, state_dir: str | None, etcd: str | None) -> Context:
        etcd = etcd or os.environ.get("CLOUDLET_ETCD") or None
        if etcd and not state_dir:
            raise CloudletError(
                "the etcd store is not available in this build yet; use --state-dir "
                "(or no store option) for the embedded store"
            )
        chosen = state_dir or os.environ.get("CLOUDLET_STATE_DIR") or default_state_dir()
        return cls(Path(chosen))

    @property
    def repo(self) -> StateRepo:
        if self._repo is None:
            self._repo = StateRepo(open_store(self.state_dir))
        return self._repo

    def provider(self, platform: Platform) -> Provider:
        key = repr(platform)
        if key not in self._providers:
            self._providers[key] = make_provider(platform, self.state_dir)
        return self._providers[key]

    def engine(
        self,
        cloudlet: Cloudlet,
        options: SyncOptions | None = None,
        listener: SyncListener | None = None,
    ) -> Engine:
        return Engine(
            self.repo,
            self.provider(cloudlet.spec.platform),
            options or SyncOptions(),
            listener or SyncListener(),
        )

    def stored(self, name: str) -> Cloudlet:
        record = self.repo.get_desired(name)
        if record is None:
            raise NotFound(f"no cloudlet named {name!r} in {self.state_dir}")
        return structure(record.document)

    def close(self) -> None:
        for provider in self._providers.values():
            provider.close()
        if self._repo is not None:
            self._repo.store.close()
