"""Where an LB document sits on each cloud: shared by the writer (a provider)
and the reader (``cloudlet lb-agent`` on the LB VM), which must not import
each other (an LB image carries no cloud SDK).

OpenStack: the server's metadata, which the guest reads from the metadata
service or a config drive (``meta`` of ``openstack/latest/meta_data.json``).
A Nova metadata value holds 255 characters, so the document is cut into
chunks ``cloudlet.lb:0`` .. ``cloudlet.lb:<n-1>`` and ``cloudlet.lb`` says
how many: the writer sets all of them in one request and removes leftover
chunks after, so a reader sees the old document or the new one, never a
mix. Each item counts against Nova's ``metadata_items`` quota (128 per
server by default), with the server's own marks and records.

vSphere: one ``guestinfo`` variable in the VM's ``extraConfig``, read inside
the guest with ``vmware-rpctool "info-get guestinfo.cloudlet.lb"``.
"""

from __future__ import annotations

from collections.abc import Mapping

#: The OpenStack metadata key holding the number of chunks.
COUNT_KEY = "cloudlet.lb"
CHUNK_PREFIX = COUNT_KEY + ":"
CHUNK = 255
#: The vSphere guestinfo variable (an ``extraConfig`` key).
GUESTINFO_KEY = "guestinfo.cloudlet.lb"


class TornDocument(ValueError):
    """The count names a chunk that is not there: caught mid-write (or hand-edited)."""


def chunk_items(text: str) -> dict[str, str]:
    """The metadata items holding ``text``."""
    chunks = [text[i : i + CHUNK] for i in range(0, len(text), CHUNK)] or [""]
    items = {f"{CHUNK_PREFIX}{n}": chunk for n, chunk in enumerate(chunks)}
    items[COUNT_KEY] = str(len(chunks))
    return items


def document_keys(metadata: Mapping[str, str]) -> list[str]:
    """Every key of a document in ``metadata``, the count first (removed first,
    a reader then sees no document rather than a shrinking one)."""
    chunks = sorted(
        (k for k in metadata if k.startswith(CHUNK_PREFIX) and k[len(CHUNK_PREFIX) :].isdigit()),
        key=lambda k: int(k[len(CHUNK_PREFIX) :]),
    )
    return ([COUNT_KEY] if COUNT_KEY in metadata else []) + chunks


def stale_keys(metadata: Mapping[str, str], items: Mapping[str, str]) -> list[str]:
    """Chunks in ``metadata`` beyond the document ``items`` holds."""
    return [k for k in document_keys(metadata) if k not in items]


def join_chunks(metadata: Mapping[str, object]) -> str | None:
    """The document in ``metadata``; None when there is none; TornDocument when
    the count names a chunk that is missing or not text."""
    count = metadata.get(COUNT_KEY)
    if count is None:
        return None
    if not isinstance(count, str) or not count.isdigit() or int(count) < 1:
        raise TornDocument(f"{COUNT_KEY}: {count!r} is not a number of chunks")
    parts = []
    for n in range(int(count)):
        part = metadata.get(f"{CHUNK_PREFIX}{n}")
        if not isinstance(part, str):
            raise TornDocument(f"{CHUNK_PREFIX}{n} missing (of {count})")
        parts.append(part)
    return "".join(parts)
