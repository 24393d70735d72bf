"""What the handlers of the owner-folder kinds (records, VMs) are built from.

Both put objects in the owner's folder, hand out addresses and read the
owner's objects back through a snapshot; networks (port groups and their
IP pools) live elsewhere and need none of it.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from cloudlet.providers.vsphere.addresses import Addresses
from cloudlet.providers.vsphere.folders import OwnerFolders
from cloudlet.providers.vsphere.session import Session
from cloudlet.providers.vsphere.snapshot import Snapshot


@attrs.define
class FolderKindHandler:
    _session: Session
    _folders: OwnerFolders
    _addresses: Addresses
    _snapshot: Callable[..., Snapshot]
