"""Config specs for a VM's NICs and its ``guestinfo`` record.

A VM's NICs are replaced wholesale when it is built: the template's own
NICs are removed and one VMXNET3 NIC per port is added, in the order of the
VM's ``ports``, on the port's port group (or the site's external network).
The guest learns its static addresses from ``guestinfo.cloudlet.nics``
(readable inside the VM with ``vmware-rpctool "info-get guestinfo..."``),
since vSphere has no DHCP/IPAM to hand them out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cloudlet.providers.vsphere.sdk import vim
from cloudlet.providers.vsphere.site import Network

GUEST = "guestinfo.cloudlet."
Device = vim.vm.device


def backing(network: Network) -> Any:
    if network.portgroup_key is not None:
        port = vim.dvs.PortConnection(
            switchUuid=network.switch_uuid, portgroupKey=network.portgroup_key
        )
        return Device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(port=port)
    return Device.VirtualEthernetCard.NetworkBackingInfo(
        deviceName=network.name, network=network.ref
    )


def nic_changes(existing: Iterable[Any], networks: Sequence[Network]) -> list[Any]:
    """Remove every NIC the clone came with, add one per port (keys are temporary)."""
    changes = [
        Device.VirtualDeviceSpec(operation="remove", device=d)
        for d in existing
        if isinstance(d, Device.VirtualEthernetCard)
    ]
    for i, network in enumerate(networks):
        nic = Device.VirtualVmxnet3(
            key=-(i + 1),
            backing=backing(network),
            connectable=Device.VirtualDevice.ConnectInfo(
                startConnected=True, allowGuestControl=True, connected=True
            ),
        )
        changes.append(Device.VirtualDeviceSpec(operation="add", device=nic))
    return changes


def guest_options(values: Mapping[str, Any]) -> list[Any]:
    """``guestinfo.cloudlet.<key>`` options; lists and mappings as JSON."""
    out = []
    for key, value in values.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        out.append(vim.option.OptionValue(key=f"{GUEST}{key}", value=text))
    return out
