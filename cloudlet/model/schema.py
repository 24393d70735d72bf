"""The YAML's JSON Schema and field reference, generated from the spec classes.

Both come from :mod:`cloudlet.model.spec` itself, so neither can drift from
what the loader accepts: field names as the YAML spells them (the codec's
camelCase renames), types from the annotations, defaults from the attrs
defaults, and each field's description from the ``#:`` comment above it in
``spec.py`` (a test requires one for every field). The schema states the
shape; ``cloudlet validate`` checks more (references between objects, CIDRs,
unique names, port collisions, what each platform type requires).
"""

from __future__ import annotations

import ast
import inspect
import json
import types
import typing
from collections.abc import Iterator
from typing import Any, Literal, Union, cast, get_args, get_origin

import attrs

from cloudlet.model import spec as s
from cloudlet.model.codec import INT_MAX, INT_MIN, SPEC_CLASSES
from cloudlet.model.validate import OPTIONAL_FIELDS, PLATFORM_FIELDS, camel

DRAFT = "https://json-schema.org/draft/2020-12/schema"


def field_docs(cls: type[Any]) -> dict[str, str]:
    """Each field's ``#:`` comment lines (those right above it, or at the end
    of its line), joined; fields without one are absent."""
    source = inspect.getsource(cls)
    lines = source.splitlines()
    (node,) = ast.parse(source).body
    assert isinstance(node, ast.ClassDef)
    docs: dict[str, str] = {}
    for item in node.body:
        if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
            continue
        above: list[str] = []
        i = item.lineno - 2
        while i >= 0 and lines[i].strip().startswith("#:"):
            above.insert(0, lines[i].strip()[2:].strip())
            i -= 1
        _, hash_, trailing = lines[item.lineno - 1].partition("#:")
        text = " ".join([*above, trailing.strip()] if hash_ else above).strip()
        if text:
            docs[item.target.id] = text.replace("``", "`")
    return docs


def _summary(cls: type[Any]) -> str:
    """The first paragraph of a class's docstring, on one line."""
    return " ".join((cls.__doc__ or "").split("\n\n")[0].split()).replace("``", "`")


def _hints(cls: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(cls, vars(s))


def _is_optional(tp: Any) -> tuple[bool, Any]:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def type_schema(tp: Any) -> dict[str, Any]:
    """The JSON Schema of one annotation (the codec's strict rules: no
    coercion, 64-bit integers)."""
    optional, inner = _is_optional(tp)
    if optional:
        return {"anyOf": [type_schema(inner), {"type": "null"}]}
    origin = get_origin(tp)
    if origin is Literal:
        return {"enum": list(get_args(tp))}
    if origin is list:
        (item,) = get_args(tp)
        return {"type": "array", "items": type_schema(item)}
    if origin is dict:
        _, value = get_args(tp)
        return {"type": "object", "additionalProperties": type_schema(value)}
    if attrs.has(tp):
        return {"$ref": f"#/$defs/{tp.__name__}"}
    simple: dict[Any, dict[str, Any]] = {
        str: {"type": "string"},
        bool: {"type": "boolean"},
        int: {"type": "integer", "minimum": INT_MIN, "maximum": INT_MAX},
        float: {"type": "number"},
    }
    return dict(simple[tp])


def _default(field: attrs.Attribute[Any]) -> tuple[bool, Any]:
    """(has a default, the default as YAML data); a nested class's default is
    not spelled out (its own fields say it)."""
    default = field.default
    if default is attrs.NOTHING:
        return False, None
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        value = cast(Any, default).factory()
        return (True, value) if isinstance(value, list | dict) else (True, {})
    return True, default


def class_schema(cls: type[Any]) -> dict[str, Any]:
    docs = field_docs(cls)
    hints = _hints(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field in attrs.fields(cls):
        prop = type_schema(hints[field.name])
        if field.name in docs:
            prop["description"] = docs[field.name]
        has, value = _default(field)
        if has:
            prop["default"] = value
        else:
            required.append(camel(field.name))
        properties[camel(field.name)] = prop
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    out["additionalProperties"] = False
    if cls.__doc__:
        out["description"] = _summary(cls)
    return out


def _platform_rules() -> list[dict[str, Any]]:
    """A platform type that needs fields requires them."""
    return [
        {
            "if": {"properties": {"type": {"const": kind}}, "required": ["type"]},
            "then": {"required": [camel(f) for f in fields]},
        }
        for kind, fields in PLATFORM_FIELDS.items()
        if kind not in OPTIONAL_FIELDS
    ]


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one YAML document."""
    defs = {cls.__name__: class_schema(cls) for cls in SPEC_CLASSES if cls is not s.Cloudlet}
    defs["Platform"]["allOf"] = _platform_rules()
    root = class_schema(s.Cloudlet)
    root["properties"]["apiVersion"]["const"] = s.API_VERSION
    root["properties"]["kind"]["const"] = s.KIND
    return {
        "$schema": DRAFT,
        "title": "cloudlet/v1 Cloudlet",
        **root,
        "description": "One document of a cloudlet file (a file may hold several, "
        "separated by ---). Generated from cloudlet/model/spec.py; "
        "`cloudlet validate` checks more than this shape.",
        "$defs": defs,
    }


def json_text() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"


def _type_words(tp: Any) -> str:
    optional, inner = _is_optional(tp)
    if optional:
        return _type_words(inner)
    origin = get_origin(tp)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in get_args(tp))
    if origin is list:
        return f"list of {_type_words(get_args(tp)[0])}"
    if origin is dict:
        return f"mapping of string to {_type_words(get_args(tp)[1])}"
    if attrs.has(tp):
        return f"[{tp.__name__}](#{tp.__name__.lower()})"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}[tp]


def _default_words(field: attrs.Attribute[Any]) -> str:
    has, value = _default(field)
    if not has:
        return "**required**"
    if value is None:
        return "unset"
    if value == {} and attrs.has(_is_optional(field.type)[1]):
        return "see its fields"
    return f"`{json.dumps(value)}`"


def _yaml_paths() -> dict[str, str]:
    """Where each class sits in a document (``spec.loadBalancers[]``)."""
    where = {"Cloudlet": "the top of each document"}
    todo: list[tuple[type[Any], str]] = [(s.Cloudlet, "")]
    while todo:
        cls, prefix = todo.pop()
        for field in attrs.fields(cls):
            tp = _is_optional(_hints(cls)[field.name])[1]
            many = get_origin(tp) is list
            inner = get_args(tp)[0] if many else tp
            if attrs.has(inner) and inner.__name__ not in where:
                path = f"{prefix}{camel(field.name)}{'[]' if many else ''}"
                where[inner.__name__] = f"`{path}`"
                todo.append((inner, path + "."))
    return where


def _markdown_rows(cls: type[Any]) -> Iterator[str]:
    docs, hints = field_docs(cls), _hints(cls)
    for field in attrs.fields(cls):
        doc = docs.get(field.name, "").replace("|", "\\|")
        yield (
            f"| `{camel(field.name)}` | {_type_words(hints[field.name])} "
            f"| {_default_words(field)} | {doc} |"
        )


def markdown() -> str:
    """docs/reference.md: every class of the document, its fields, types,
    defaults and descriptions."""
    where = _yaml_paths()
    out = [
        "# Cloudlet YAML reference (`cloudlet/v1`)",
        "",
        "Generated from `cloudlet/model/spec.py` by `cloudlet schema --markdown`;",
        "do not edit by hand (a test compares this file with a fresh generation).",
        "The same model gives the JSON Schema, `cloudlet schema`. Beyond these",
        "shapes, `cloudlet validate` checks references between objects, CIDRs,",
        "unique names, port collisions and what each platform type requires.",
        "A file may hold several documents (`---`), one cloudlet each.",
        "",
    ]
    order: list[type[Any]] = [s.Cloudlet, *(c for c in SPEC_CLASSES if c is not s.Cloudlet)]
    order.sort(key=lambda c: list(where).index(c.__name__) if c.__name__ in where else 99)
    for cls in order:
        out += [f"## {cls.__name__}", "", f"At {where.get(cls.__name__, '?')}."]
        if cls.__doc__:
            out += ["", _summary(cls)]
        out += ["", "| field | type | default | description |", "| --- | --- | --- | --- |"]
        out += list(_markdown_rows(cls))
        out.append("")
    return "\n".join(out)
