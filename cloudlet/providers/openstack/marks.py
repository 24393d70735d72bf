"""How the provider marks what it creates, so it finds exactly that again.

Neutron objects carry tags: ``cloudlet.owner=<cloudlet>`` (the filter every
list call uses), ``cloudlet.id=<kind/name>`` and one ``cloudlet.dep=<id>``
per dependency (so an orphan can still be deleted in a safe order). Zed's
Neutron cannot tag in the create call, so each object is also *named*
``<owner>:<id>``: a run killed between create and tag leaves a named,
untagged object, which the next create finds by name and adopts.

Nova takes tags in the create call (no ``/`` allowed in them), so a server
is tagged with the owner and carries its id, ports and dependencies as
metadata. Records the cloud has no object for (Kubernetes node joins, load
balancers and their listeners) are metadata on the server that consumes
them, in chunks because a metadata value holds 255 characters.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

OWNER = "cloudlet.owner="
ID = "cloudlet.id="
DEP = "cloudlet.dep="
#: Server metadata keys.
META_OWNER = "cloudlet.owner"
META_ID = "cloudlet.id"
META_PORTS = "cloudlet.ports"
META_DEPS = "cloudlet.deps"
RECORD = "cloudlet.rec:"
CHUNK = 255


def owner_tag(owner: str) -> str:
    return OWNER + owner


def object_name(owner: str, rid: str) -> str:
    return f"{owner}:{rid}"


def tags_for(owner: str, rid: str, deps: Iterable[str]) -> list[str]:
    return [owner_tag(owner), ID + rid, *(DEP + d for d in sorted(deps))]


def parse_tags(tags: Iterable[str]) -> tuple[str | None, str | None, tuple[str, ...]]:
    """(owner, id, deps) from an object's tags; None where a tag is missing."""
    owner = rid = None
    deps: list[str] = []
    for tag in tags:
        if tag.startswith(OWNER):
            owner = tag[len(OWNER) :]
        elif tag.startswith(ID):
            rid = tag[len(ID) :]
        elif tag.startswith(DEP):
            deps.append(tag[len(DEP) :])
    return owner, rid, tuple(sorted(deps))


def server_metadata(
    owner: str, rid: str, ports: tuple[str, ...], deps: Iterable[str]
) -> dict[str, str]:
    return {
        META_OWNER: owner,
        META_ID: rid,
        META_PORTS: json.dumps(list(ports), separators=(",", ":")),
        META_DEPS: json.dumps(sorted(deps), separators=(",", ":")),
    }


def decode_list(text: str | None) -> tuple[str, ...] | None:
    try:
        value = json.loads(text or "")
    except ValueError:
        return None
    return tuple(str(v) for v in value) if isinstance(value, list) else None


def _record_prefix(rid: str) -> str:
    # Nova metadata keys take letters, digits and "-_:. ": "/" becomes ":".
    return RECORD + rid.replace("/", ":", 1) + ":"


def record_items(rid: str, attrs: Mapping[str, Any], deps: Iterable[str]) -> dict[str, str]:
    """The metadata items holding one record: ``cloudlet.rec:<kind>:<name>:<n>`` chunks."""
    text = json.dumps({"a": dict(attrs), "d": sorted(deps)}, separators=(",", ":"))
    chunks = [text[i : i + CHUNK] for i in range(0, len(text), CHUNK)] or [""]
    return {f"{_record_prefix(rid)}{n}": chunk for n, chunk in enumerate(chunks)}


def record_keys(metadata: Mapping[str, str], rid: str) -> list[str]:
    prefix = _record_prefix(rid)
    return [k for k in metadata if k.startswith(prefix) and k[len(prefix) :].isdigit()]


def records_in(metadata: Mapping[str, str]) -> dict[str, tuple[dict[str, Any], tuple[str, ...]]]:
    """Every whole record in a server's metadata, by engine id."""
    chunks: dict[str, dict[int, str]] = {}
    for key, value in metadata.items():
        if not key.startswith(RECORD):
            continue
        name, _, n = key[len(RECORD) :].rpartition(":")
        rid = name.replace(":", "/", 1)
        if "/" in rid and n.isdigit():
            chunks.setdefault(rid, {})[int(n)] = value
    out: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {}
    for rid, parts in chunks.items():
        try:
            body = json.loads("".join(parts[n] for n in range(len(parts))))
            out[rid] = (dict(body["a"]), tuple(str(d) for d in body["d"]))
        except (KeyError, ValueError, TypeError):
            continue  # a torn or hand-edited record: observed as missing, so re-made
    return out
