"""Where the command line finds its store, providers and engine."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from cloudlet.errors import CloudletError, NotFound

# The engine (and through it the planner), the stores, the providers and the
# model's codec load when a command first needs them, not when the parser is built.
if TYPE_CHECKING:
    from cloudlet.engine.sync import Engine, SyncListener, SyncOptions
    from cloudlet.model.spec import Cloudlet, Platform
    from cloudlet.providers.base import Provider
    from cloudlet.store.base import Store
    from cloudlet.store.records import StateRepo


def lock_timeout() -> float:
    """How long a command waits for another run of the same cloudlet (seconds)."""
    raw = os.environ.get("CLOUDLET_LOCK_TIMEOUT", "60")
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise CloudletError(
            f"CLOUDLET_LOCK_TIMEOUT must be a number of seconds, not {raw!r}"
        ) from None


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
        # With --etcd the store is etcd; the state dir still holds what is
        # local to this machine (the fake provider's simulated cloud).
        etcd = etcd or os.environ.get("CLOUDLET_ETCD") or None
        chosen = state_dir or os.environ.get("CLOUDLET_STATE_DIR") or default_state_dir()
        return cls(Path(chosen), etcd)

    @property
    def repo(self) -> StateRepo:
        if self._repo is None:
            from cloudlet.store.records import StateRepo

            self._repo = StateRepo(self._open_store())
        return self._repo

    def _open_store(self) -> Store:
        if self.etcd:
            from cloudlet.store.etcd import open_etcd  # grpc loads only when used

            return open_etcd(self.etcd)
        from cloudlet.store.sqlite import open_store

        return open_store(self.state_dir)

    @property
    def where(self) -> str:
        return f"etcd at {self.etcd}" if self.etcd else str(self.state_dir)

    def provider(self, platform: Platform) -> Provider:
        key = repr(platform)
        if key not in self._providers:
            from cloudlet.providers.registry import make_provider

            self._providers[key] = make_provider(platform, self.state_dir)
        return self._providers[key]

    def engine(
        self,
        cloudlet: Cloudlet,
        options: SyncOptions | None = None,
        listener: SyncListener | None = None,
    ) -> Engine:
        from cloudlet.engine.sync import Engine, QuietListener, SyncOptions

        return Engine(
            self.repo,
            self.provider(cloudlet.spec.platform),
            options or SyncOptions(lock_timeout=lock_timeout()),
            listener or QuietListener(),
        )

    def stored(self, name: str) -> Cloudlet:
        record = self.repo.get_desired(name)
        if record is None:
            raise NotFound(f"no cloudlet named {name!r} in {self.where}")
        from cloudlet.model.codec import structure

        return structure(record.document)

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for provider in self._providers.values():
            provider.close()
        if self._repo is not None:
            self._repo.store.close()
