"""The ``vsphere`` platform: a provider on pyVmomi (VMware's vSphere SDK).

pyVmomi is imported inside this package only, so the rest of cloudlet runs
without it. See docs/vsphere.md for what maps to what.
"""

from __future__ import annotations

from cloudlet.providers.vsphere.config import VsphereConfig, load_config
from cloudlet.providers.vsphere.provider import VsphereProvider

__all__ = ["VsphereConfig", "VsphereProvider", "load_config"]
