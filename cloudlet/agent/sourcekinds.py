"""``--source KIND:ARGUMENT``: which reader an agent's document comes from.

One table, so a cloud's reader is one line here: ``file:PATH`` on ``local``,
``openstack[:URL|PATH]`` for Nova's metadata, ``vsphere[:COMMAND]`` for guestinfo. The
argument (everything after the first colon) is the kind's own business and
may be empty (a metadata service at its well-known address needs none).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

# Each reader loads when its kind is chosen: the table itself is read by
# ``cloudlet --help``, which should not pay for urllib and the readers.
if TYPE_CHECKING:
    from cloudlet.agent.sources import Source


class SourceSpecError(ValueError):
    """A ``--source`` that names no known kind, or a kind's bad argument."""


def _file(argument: str) -> Source:
    if not argument:
        raise SourceSpecError("file: needs a path (file:/path/to/lb.json)")
    from cloudlet.agent.sources import FileSource

    return FileSource(Path(argument))


def _openstack(argument: str) -> Source:
    """``openstack`` (the metadata service), ``openstack:URL``, or
    ``openstack:PATH`` (a meta_data.json or a config drive's mount point)."""
    from cloudlet.agent.openstack_source import METADATA_URL, OpenstackSource

    return OpenstackSource(argument or METADATA_URL)


def _vsphere(argument: str) -> Source:
    """``vsphere`` (``vmware-rpctool``) or ``vsphere:COMMAND`` (e.g. ``vmtoolsd --cmd``)."""
    from cloudlet.agent.vsphere_source import VsphereSource

    return VsphereSource(tuple(argument.split()) or ("vmware-rpctool",))


#: kind -> reader from its argument; a reader refuses a bad argument with SourceSpecError.
SOURCE_KINDS: dict[str, Callable[[str], Source]] = {
    "file": _file,
    "openstack": _openstack,
    "vsphere": _vsphere,
}


def parse_source(spec: str) -> Source:
    """The source ``spec`` (``KIND:ARGUMENT``, or a bare ``KIND``) names."""
    kind, _, argument = spec.partition(":")
    make = SOURCE_KINDS.get(kind)
    if make is None:
        known = ", ".join(sorted(SOURCE_KINDS))
        raise SourceSpecError(f"--source {spec!r}: unknown kind {kind!r} (known: {known})")
    return make(argument)
