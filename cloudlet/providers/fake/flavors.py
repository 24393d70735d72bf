"""The fake cloud's flavors and the one rule they bring, as Nova has it.

A server's root disk comes from its flavor and a resize can never shrink it
(Nova refuses with HTTP 400), so such a flavor change needs a new server.
The fake enforces the rule so that the engine's handling of it (the plan
shows a replacement) is exercised by every test on the fake, not only on a
real OpenStack.
"""

from __future__ import annotations

from collections.abc import Mapping

from cloudlet.model.resources import AttrValue

#: Root disk in GB, like the test cloud's (and DevStack's) m1 flavors.
ROOT_DISK_GB: Mapping[str, int] = {
    "m1.tiny": 1,
    "m1.small": 20,
    "m1.medium": 40,
    "m1.large": 80,
    "m1.xlarge": 160,
}


def disk_shrink(
    kind: str, old: Mapping[str, AttrValue], new: Mapping[str, AttrValue]
) -> str | None:
    """Why a VM cannot go from ``old`` to ``new`` in place, or None."""
    if kind != "vm":
        return None
    before = ROOT_DISK_GB.get(str(old.get("flavor")))
    after = ROOT_DISK_GB.get(str(new.get("flavor")))
    if before is None or after is None or after >= before:
        return None
    return f"a resize cannot shrink the root disk from {before} to {after} GB"
