"""Which Provider serves a platform type; the one place that knows them all."""

from __future__ import annotations

from pathlib import Path

from cloudlet.errors import CloudletError
from cloudlet.model.spec import Platform
from cloudlet.providers.base import Provider


def make_provider(platform: Platform, state_dir: Path) -> Provider:
    if platform.type == "fake":
        from cloudlet.providers.fake import FakeProvider

        return FakeProvider(
            state_dir,
            latency_ms=platform.latency_ms,
            jitter_ms=platform.jitter_ms,
            failure_rate=platform.failure_rate,
            seed=platform.seed,
        )
    if platform.type == "vsphere":
        from cloudlet.providers.vsphere import VsphereProvider  # pyVmomi loads only here

        return VsphereProvider(platform)
    if platform.type == "openstack":
        from cloudlet.providers.openstack.provider import OpenstackProvider  # SDK loads only here

        return OpenstackProvider(platform)
    if platform.type == "local":
        from cloudlet.providers.local.provider import LocalProvider

        return LocalProvider(state_dir, external_cidr=platform.external_cidr)
    raise CloudletError(f"platform type {platform.type!r} is not available")
