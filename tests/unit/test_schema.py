"""The JSON Schema and the field reference are the model's (issue 11).

docs/reference.md must equal a fresh generation; every example validates
against the schema; documents the loader refuses for their shape fail it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import attrs
import jsonschema
import pytest
import yaml

from cloudlet.errors import SpecError
from cloudlet.model import schema
from cloudlet.model.codec import SPEC_CLASSES, unstructure
from cloudlet.model.load import load_file
from cloudlet.model.validate import camel

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def validator() -> jsonschema.Draft202012Validator:
    doc = schema.json_schema()
    jsonschema.Draft202012Validator.check_schema(doc)
    return jsonschema.Draft202012Validator(doc)


def test_the_committed_reference_is_fresh() -> None:
    committed = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    assert committed == schema.markdown(), (
        "docs/reference.md is stale: run `cloudlet schema --markdown > docs/reference.md`"
    )


def test_every_field_is_documented_and_named_as_in_yaml() -> None:
    reference = schema.markdown()
    for cls in SPEC_CLASSES:
        docs = schema.field_docs(cls)
        missing = [f.name for f in attrs.fields(cls) if f.name not in docs]
        assert not missing, f"{cls.__name__}: add a #: comment above {missing} in spec.py"
        for field in attrs.fields(cls):
            assert f"| `{camel(field.name)}` |" in reference
    assert "| `loadBalancer` |" in reference and "| `load_balancer` |" not in reference


def test_the_schema_is_draft_2020_12() -> None:
    doc = schema.json_schema()
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    validator()  # check_schema raises on a malformed schema
    assert json.loads(schema.json_text()) == doc


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_validates(path: Path) -> None:
    check = validator()
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert documents
    for document in documents:
        errors = [e.message for e in check.iter_errors(document)]
        assert not errors, f"{path.name}: {errors}"


def test_what_the_codec_writes_validates() -> None:
    """unstructure spells every default out: all fields, the renames, the types."""
    check = validator()
    for path in EXAMPLES:
        for cloudlet in load_file(str(path)):
            check.validate(unstructure(cloudlet))


GOOD: dict[str, Any] = {
    "apiVersion": "cloudlet/v1",
    "kind": "Cloudlet",
    "metadata": {"name": "bad"},
    "spec": {
        "platform": {"type": "openstack", "cloud": "c", "externalNetwork": "public"},
        "networks": [{"name": "internal", "cidr": "10.0.0.0/24"}],
        "loadBalancers": [{"name": "root", "network": "internal"}],
        "vms": [{"name": "a", "network": "internal", "expose": {"loadBalancer": "root"}}],
    },
}


def broken(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(GOOD)
    *parents, last = path
    target = doc
    for key in parents:
        target = target[key]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return doc


BAD = {
    "unknown field": (("spec", "vms", 0, "flavour"), "m1.small"),
    "snake_case name": (("spec", "data_path"), "router"),
    "wrong enum": (("spec", "dataPath"), "bridge"),
    "string for int": (("spec", "vms", 0, "expose", "ports"), [{"port": "443"}]),
    "int out of range": (("spec", "platform", "latencyMs"), 2**63),
    "missing required": (("spec", "networks", 0, "cidr"), KeyError),
    "wrong apiVersion": (("apiVersion",), "cloudlet/v2"),
    "openstack without cloud": (("spec", "platform", "cloud"), KeyError),
    "bool for string": (("metadata", "name"), True),
}


def test_the_good_document_validates(tmp_path: Path) -> None:
    validator().validate(GOOD)
    path = tmp_path / "good.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    assert [c.name for c in load_file(str(path))] == ["bad"]


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_document_fails(case: str, tmp_path: Path) -> None:
    doc = broken(*BAD[case])
    assert list(validator().iter_errors(doc)), f"{case}: the schema accepted it"
    # ... and the loader refuses it too: the schema is no stricter than cloudlet.
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(SpecError):
        load_file(str(path))


def test_schema_command_prints_both(capsys: pytest.CaptureFixture[str]) -> None:
    from cloudlet.cmd.main import main

    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == schema.json_schema()
    assert main(["schema", "--markdown"]) == 0
    assert capsys.readouterr().out == schema.markdown()
