"""The status as JSON: one cattrs converter, used at the edges only.

The store keeps, and ``status --json`` prints, the shapes DESIGN.md names
(camelCase keys; ``lastSync`` with ``at``, ``outcome``, ``message``,
``wallSeconds``, ``revision``). Optional fields are left out while unset, as
they always were, so a reader sees the same documents as before.
"""

from __future__ import annotations

import re
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from cloudlet.model.resources import freeze_value
from cloudlet.planner.plan import json_value
from cloudlet.shepherd.status import (
    AttrDiff,
    Condition,
    PortMappingStatus,
    ResourceState,
    Status,
)
from cloudlet.store.records import SyncRecord

#: Fields left out of the JSON while they hold their default.
_OPTIONAL = {
    ResourceState: ("differs", "uid", "address", "changes"),
    SyncRecord: ("terminal",),
    Status: ("desired_revision", "pending"),
}


def _camel(name: str) -> str:
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)


def _diff_to_json(d: AttrDiff) -> dict[str, Any]:
    """An attribute's two values as JSON (tuples as lists)."""
    return {"attr": d.attr, "actual": json_value(d.actual), "desired": json_value(d.desired)}


def _diff_from_json(data: dict[str, Any], _: Any) -> AttrDiff:
    actual, desired = data.get("actual"), data.get("desired")
    return AttrDiff(data["attr"], freeze_value(actual), freeze_value(desired))


def _converter() -> cattrs.Converter:
    conv = cattrs.Converter()
    conv.register_unstructure_hook(AttrDiff, _diff_to_json)
    conv.register_structure_hook(AttrDiff, _diff_from_json)
    for cls in (ResourceState, Condition, PortMappingStatus, SyncRecord, Status):
        names: dict[str, Any] = {
            a.name: override(
                rename=_camel(a.name), omit_if_default=a.name in _OPTIONAL.get(cls, ())
            )
            for a in attrs.fields(cls)
        }
        conv.register_unstructure_hook(cls, make_dict_unstructure_fn(cls, conv, **names))
        conv.register_structure_hook(cls, make_dict_structure_fn(cls, conv, **names))
    return conv


CONVERTER = _converter()


def status_to_json(status: Status) -> dict[str, Any]:
    data: dict[str, Any] = CONVERTER.unstructure(status)
    return data


def status_from_json(data: dict[str, Any]) -> Status:
    return CONVERTER.structure(data, Status)


def sync_to_json(record: SyncRecord) -> dict[str, Any]:
    data: dict[str, Any] = CONVERTER.unstructure(record)
    return data
