"""What the ``local`` platform made, one JSON record per object.

The kernel keeps no tags, so the platform keeps them: a record per object
(its uid, the engine's owner and id, the attributes it was built with, and
what it runs, such as pids) under the state directory. A record is written
before the object is built, so a create cut off half-way leaves a record
whose object is incomplete: observe reports it ``broken`` and the engine
replaces it, which deletes what half-exists and builds it again; a second
create of the same id adopts the record instead of making another.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from attrs import asdict, define, field

from cloudlet.model.resources import AttrValue, Observed


@define
class Record:
    uid: str
    id: str
    kind: str
    attrs: dict[str, AttrValue]
    deps: list[str]
    #: What the platform built or runs for it (pids, link names).
    run: dict[str, Any] = field(factory=dict)

    def observed(self, extra: dict[str, AttrValue] | None = None) -> Observed:
        return Observed(
            self.uid, self.id, self.kind, {**self.attrs, **(extra or {})}, tuple(self.deps)
        )


class Records:
    """The records of one cloudlet on this host."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def all(self) -> list[Record]:
        return sorted(self._iter(), key=lambda r: (r.id, r.uid))

    def _iter(self) -> Iterator[Record]:
        if not self.root.is_dir():
            return
        for path in self.root.glob("*.json"):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # a torn write: its object is rebuilt
            attrs_ = {k: tuple(v) if isinstance(v, list) else v for k, v in data["attrs"].items()}
            yield Record(data["uid"], data["id"], data["kind"], attrs_, data["deps"], data["run"])

    def by_id(self, rid: str) -> Record | None:
        return next((r for r in self.all() if r.id == rid), None)

    def get(self, uid: str) -> Record | None:
        return next((r for r in self.all() if r.uid == uid), None)

    def put(self, record: Record) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{record.uid}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record), sort_keys=True))
        os.replace(tmp, path)

    def remove(self, uid: str) -> None:
        (self.root / f"{uid}.json").unlink(missing_ok=True)
