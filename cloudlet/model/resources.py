"""Resources: the flat, typed units the planner diffs and providers apply.

A resource is identified as ``kind/name``. Its attributes are a flat mapping
of scalars and tuples of strings (never nested mappings), so that diffing is
a key-by-key comparison and every value round-trips through JSON unchanged.
References to other resources are their ids, which providers resolve to
their own cloud ids; that keeps the model free of any cloud's identifiers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from attrs import define, field

AttrValue = str | int | float | bool | None | tuple[str, ...]
Attrs = Mapping[str, AttrValue]


def split_id(rid: str) -> tuple[str, str]:
    kind, _, name = rid.partition("/")
    return kind, name


def freeze_value(value: Any) -> AttrValue:
    """Turn JSON-decoded values back into the model's hashable shapes."""
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def freeze_attrs(values: Mapping[str, Any]) -> dict[str, AttrValue]:
    return {k: freeze_value(v) for k, v in values.items()}


def _sorted_ids(ids: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(ids)))


@define(frozen=True, slots=True, eq=True, hash=False)
class Resource:
    """One desired object: what it should look like and what it needs first."""

    id: str
    attrs: Attrs = field(converter=freeze_attrs)
    deps: tuple[str, ...] = field(default=(), converter=_sorted_ids)
    #: Drift policy: "heal" (default) or "report" (never changed on a resync).
    policy: str = "heal"

    @property
    def kind(self) -> str:
        return split_id(self.id)[0]

    @property
    def name(self) -> str:
        return split_id(self.id)[1]


@define(frozen=True, slots=True, eq=True, hash=False)
class Observed:
    """One object as the orchestrator reports it.

    ``id`` is the engine's tag (None for objects the engine did not create);
    ``attrs`` holds at least every attribute the engine set, plus any the
    cloud computed (addresses); ``deps`` are the ids the object was created
    against, so that orphans can still be deleted in a safe order.
    """

    uid: str
    id: str | None
    kind: str
    attrs: Attrs = field(converter=freeze_attrs)
    deps: tuple[str, ...] = field(default=(), converter=_sorted_ids)
