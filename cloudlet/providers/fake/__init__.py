"""The simulated platform: a SQLite-backed cloud and the provider that drives it."""

from __future__ import annotations

from cloudlet.providers.fake.cloud import DB_FILE, FakeCloud
from cloudlet.providers.fake.provider import FakeProvider

__all__ = ["DB_FILE", "FakeCloud", "FakeProvider"]
