"""Deterministic vSphere names for the engine's ids.

A name is unique within its parent (folder or switch), so a create that
finds its name already taken has found its own earlier attempt: that is how
a retry after a lost answer or a crash adopts instead of duplicating. Names
longer than vSphere's 80 characters keep a readable prefix and a hash.
"""

from __future__ import annotations

import hashlib

MAX_NAME = 80
FOLDER_PREFIX = "cloudlet-"
#: The owner's VMs live in this subfolder of its folder, records beside it.
VMS_FOLDER = "vms"


def _fit(name: str) -> str:
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"{name[: MAX_NAME - 17]}~{digest}"


def owner_folder(owner: str) -> str:
    """The VM folder holding everything of one cloudlet but its port groups."""
    return _fit(f"{FOLDER_PREFIX}{owner}")


def record_name(rid: str) -> str:
    """``security-group/web`` -> ``security-group:web`` (``/`` is a path separator)."""
    return _fit(rid.replace("/", ":"))


def vm_name(owner: str, name: str) -> str:
    """``<owner>.<name>``: readable in a flat list of VMs, unique in its folder."""
    return _fit(f"{owner}.{name}")


def portgroup_name(owner: str, network: str) -> str:
    """``<owner>.<network>`` on the shared switch (owner names have no ``.``)."""
    return _fit(f"{owner}.{network}")
