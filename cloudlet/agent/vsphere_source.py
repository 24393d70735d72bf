"""The LB document on vSphere: the VM's ``guestinfo.cloudlet.lb``, read in the guest.

The provider sets it in the VM's ``extraConfig``; inside the VM, VMware
Tools read it back over the backdoor: ``vmware-rpctool "info-get
guestinfo.cloudlet.lb"`` prints the value and a newline on stdout and exits
0, or prints the VMX's reply on stderr and exits 1: ``No value found`` when
the variable is not set (what cloud-init's VMware datasource tests for too),
something else when the tools cannot talk to the VMX. ``vmtoolsd --cmd``
answers alike. An empty value is no document: a removed variable reads so
on a simulator, and a guest cannot set one to "" at all.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from cloudlet.agent.sources import SourceError
from cloudlet.lb.placement import GUESTINFO_KEY

NO_VALUE = "No value found"


class VsphereSource:
    """Runs ``rpctool`` (argv prefix; ``("vmtoolsd", "--cmd")`` works too) with
    ``info-get <key>`` as its one last argument."""

    def __init__(
        self,
        rpctool: Sequence[str] = ("vmware-rpctool",),
        key: str = GUESTINFO_KEY,
        timeout: float = 5.0,
    ) -> None:
        self.argv = (*rpctool, f"info-get {key}")
        self.timeout = timeout

    def read(self) -> str | None:
        try:
            done = subprocess.run(
                self.argv, capture_output=True, text=True, timeout=self.timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise SourceError(f"{self.argv[0]}: {e}") from None
        if done.returncode != 0:
            said = done.stderr.strip()
            if said == NO_VALUE:
                return None
            raise SourceError(f"{self.argv[0]} exited {done.returncode}: {said[:300]}")
        value = done.stdout.removesuffix("\n")
        return value if value.strip() else None
