"""Saved plans: ``cloudlet plan FILE -o PLAN`` now, ``cloudlet sync --plan PLAN`` later.

A saved plan is what Terraform's ``plan -out`` is: an approval written
down. It carries everything needed to apply exactly it and to tell when it
no longer describes the cloud: the spec document (as the store keeps it),
the desired revision stored when it was made (None: nothing stored), a
digest of the observation it was planned from, and its actions as a
binding. The encoding and decoding are pure; reading and writing the file
is the command line's, the freshness checks the engine's.

Format version 1 (JSON)::

    {"format": "cloudlet-plan/1",
     "cloudlets": [{"cloudlet": NAME, "spec": {...}, "desiredRevision": 3,
                    "observed": "sha256:...", "actions": [Bound.to_json()...]}]}
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from cloudlet.errors import CloudletError
from cloudlet.model.codec import structure, unstructure
from cloudlet.model.resources import Observed
from cloudlet.model.spec import Cloudlet
from cloudlet.planner.binding import Binding, binding_from_json

FORMAT = "cloudlet-plan/1"


class SavedPlanError(CloudletError):
    """A saved plan file that cannot be read as one (named, one line)."""


@attrs.frozen
class SavedPlan:
    cloudlet: Cloudlet
    #: The desired revision stored when the plan was made (None: none was).
    desired_revision: int | None
    #: ``observation_digest`` of what the plan was made from (informative:
    #: freshness is judged by re-planning, see the engine).
    observed: str
    binding: Binding

    @property
    def name(self) -> str:
        return self.cloudlet.name


def observation_digest(actual: Iterable[Observed]) -> str:
    """A digest of everything observed (attributes, tags, dependencies)."""
    rows = sorted(
        [o.uid, o.id, o.kind, sorted((k, _plain(v)) for k, v in o.attrs.items()), list(o.deps)]
        for o in actual
    )
    blob = json.dumps(rows, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


def encode(plans: Sequence[SavedPlan]) -> str:
    doc = {
        "format": FORMAT,
        "cloudlets": [
            {
                "cloudlet": p.name,
                "spec": unstructure(p.cloudlet),
                "desiredRevision": p.desired_revision,
                "observed": p.observed,
                "actions": p.binding.to_json(),
            }
            for p in plans
        ],
    }
    return json.dumps(doc, indent=2) + "\n"


def decode(text: str, source: str) -> list[SavedPlan]:
    """The plans in ``text``; a SavedPlanError naming ``source`` otherwise."""
    try:
        doc = json.loads(text)
    except ValueError as err:
        raise SavedPlanError(f"{source}: not a saved plan (not JSON: {err})") from None
    if not isinstance(doc, dict) or "format" not in doc:
        raise SavedPlanError(f"{source}: not a saved plan (no format field)")
    if doc["format"] != FORMAT:
        raise SavedPlanError(
            f"{source}: saved plan format {doc['format']!r} is not {FORMAT!r}; make it again"
            " with cloudlet plan FILE -o PLAN"
        )
    entries = doc.get("cloudlets")
    if not isinstance(entries, list) or not entries:
        raise SavedPlanError(f"{source}: saved plan holds no cloudlets")
    return [_entry(e, source, n) for n, e in enumerate(entries)]


def _entry(entry: Any, source: str, n: int) -> SavedPlan:
    where = f"{source}: cloudlets[{n}]"
    try:
        name = entry["cloudlet"]
        spec = entry["spec"]
        revision = entry["desiredRevision"]
        observed = entry["observed"]
        rows = entry["actions"]
        if not isinstance(spec, dict) or not isinstance(rows, list):
            raise TypeError("spec must be a mapping and actions a list")
        if revision is not None and (type(revision) is not int or revision < 0):
            raise TypeError("desiredRevision must be a whole number or null")
        if not isinstance(name, str) or not isinstance(observed, str):
            raise TypeError("cloudlet and observed must be strings")
        binding = binding_from_json(name, rows)
    except KeyError as err:
        raise SavedPlanError(f"{where}: missing field {err}") from None
    except (TypeError, ValueError, AttributeError) as err:
        raise SavedPlanError(f"{where}: {err}") from None
    try:
        cloudlet = structure(spec, source)
    except CloudletError as err:
        first = str(err).splitlines()[0] if str(err) else "invalid"
        raise SavedPlanError(f"{where}: the saved spec is not valid: {first}") from None
    if cloudlet.name != name:
        raise SavedPlanError(f"{where}: spec is for {cloudlet.name!r}, not {name!r}")
    return SavedPlan(cloudlet, revision, observed, binding)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
