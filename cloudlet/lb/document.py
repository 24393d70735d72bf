"""The LB document: what a provider puts where an LB VM's agent reads it.

One document per LB *member VM* (with ``redundancy: vip`` the two members
differ in their VRRP priority, source and peers), holding exactly what the
renderer needs and nothing a cloud would have to be asked for: the listeners
with their back-ends already resolved to addresses, the address to bind and
the VRRP instance. So ``cloudlet lb-agent`` needs no credentials and no API:
``local`` writes the document to a file, OpenStack to the server's metadata,
vSphere to the VM's ``guestinfo``; each reader hands the text to
:func:`decode`.

The runtime directory is the agent's own business (where *it* keeps pid
files and sockets), so it is not in the document: :func:`decode` takes it.
The format is JSON with a ``version``; a document from a newer cloudlet is
refused rather than half understood.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import cattrs

from cloudlet.lb.render import Backend, LbConfig, Listener, Vrrp
from cloudlet.model.kinds import refs
from cloudlet.model.resources import AttrValue

VERSION = 1

_converter = cattrs.Converter()


class DocumentError(ValueError):
    """A document that does not describe an LB (bad JSON, a field missing or
    invalid, an unknown version): the agent keeps what it runs and says so."""


def build(
    name: str,
    listeners: Sequence[tuple[str, Mapping[str, AttrValue]]],
    bind: str,
    backends: Mapping[str, str | None],
    runtime_dir: str,
    vrrp: Vrrp | None = None,
) -> LbConfig:
    """An LB's configuration from its listener records ``(id, attrs)``.

    ``backends`` maps a target VM id to its address on an internal subnet; a
    target with no address yet is left out (a listener with none is not
    rendered, see :mod:`cloudlet.lb.render`)."""

    def backends_of(attrs: Mapping[str, AttrValue]) -> tuple[Backend, ...]:
        port = int(str(attrs["port"]))
        return tuple(
            Backend(target, str(backends[target]), port)
            for target in refs(attrs, "targets")
            if backends.get(target)
        )

    return LbConfig(
        name=name,
        listeners=tuple(
            Listener(
                lid,
                "udp" if attrs.get("protocol") == "udp" else "tcp",
                bind,
                int(str(attrs["publicPort"])),
                backends_of(attrs),
            )
            for lid, attrs in listeners
        ),
        vrrp=vrrp,
        runtime_dir=runtime_dir,
    )


def encode(cfg: LbConfig) -> str:
    """The document of ``cfg``: compact JSON, keys sorted, so an unchanged
    configuration is the same text (a writer compares before it writes)."""
    body: dict[str, Any] = _converter.unstructure(cfg)
    body.pop("runtime_dir")
    body["version"] = VERSION
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def digest(text: str) -> str:
    """A document's identity: what an agent reports as applied, so its writer
    can wait for exactly the text it wrote (or a newer one it reads back)."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def decode(text: str, runtime_dir: str) -> LbConfig:
    """The configuration a document describes, run from ``runtime_dir``."""
    try:
        body = json.loads(text)
    except ValueError as e:
        raise DocumentError(f"not JSON: {e}") from None
    if not isinstance(body, dict):
        raise DocumentError("not a JSON object")
    version = body.pop("version", None)
    if version != VERSION:
        raise DocumentError(f"version {version!r}; this agent reads version {VERSION}")
    body["runtime_dir"] = runtime_dir
    try:
        return _converter.structure(body, LbConfig)
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as e:
        raise DocumentError(_describe(e)) from None


def _describe(error: Exception) -> str:
    if isinstance(error, cattrs.BaseValidationError):
        causes = [f"{_describe(c)}" for c in error.exceptions]
        return "; ".join(causes) or str(error)
    return str(error)
