"""Plain data <-> spec classes, strictly, with errors that point at paths.

One cattrs converter serves both the YAML loader and the store, so a stored
spec is held to exactly the rules of a loaded one. Its hooks are strict where
cattrs is lenient by default (``str(3)``, ``int("3")``, ``bool("no")`` would
silently turn operator mistakes into different infrastructure), and its
errors are walked back into ``(path, message)`` pairs so that the loader can
place each one at a line and column.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeVar, cast, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from cloudlet.errors import SpecError
from cloudlet.model import spec as s
from cloudlet.model.validate import (
    Locate,
    Path,
    Problem,
    camel,
    did_you_mean,
    render_path,
    shown,
    validate,
)

T = TypeVar("T")
#: Specs never need more than 64 bits; bigger ints cannot even be printed safely.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1

#: Leaves first: a class's hook is generated after the hooks of its fields.
SPEC_CLASSES: tuple[type[Any], ...] = (
    s.Metadata,
    s.Gateway,
    s.Platform,
    s.Defaults,
    s.Network,
    s.Rule,
    s.SecurityGroup,
    s.LoadBalancer,
    s.PortSpec,
    s.Expose,
    s.Cluster,
    s.Vm,
    s.CloudletSpec,
    s.Cloudlet,
)


class ValueProblem(ValueError):
    """A value of the wrong shape; the message is shown to the operator as is."""


class KeyProblem(ValueProblem):
    """A mapping key of the wrong shape: located at the key, not its value."""


def kind_of(value: object) -> str:
    """The YAML word for a value's type, as an operator would say it."""
    names = {type(None): "null", bool: "bool", int: "int", float: "float", str: "string"}
    names |= {list: "list", dict: "mapping"}
    return names.get(type(value), type(value).__name__)


def _str(value: object, _: object) -> str:
    if isinstance(value, str):
        return value
    hint = " (quote it)" if isinstance(value, int | float | bool) else ""
    raise ValueProblem(f"expected a string, got {kind_of(value)}{hint}")


def _int(value: object, _: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if not INT_MIN <= value <= INT_MAX:
            raise ValueProblem("integer out of range")
        return value
    raise ValueProblem(f"expected an integer, got {kind_of(value)}")


def _float(value: object, _: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise ValueProblem("number too large") from None
    raise ValueProblem(f"expected a number, got {kind_of(value)}")


def _bool(value: object, _: object) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueProblem(f"expected true or false, got {kind_of(value)}")


def _literal(value: object, tp: Any) -> object:
    allowed = get_args(tp)
    if isinstance(value, str) and value in allowed:
        return value
    raise ValueProblem(f"must be one of: {', '.join(allowed)} (got {shown(value)})")


def _noted(exc: Exception, note: str, index: Any, tp: Any) -> Exception:
    exc.add_note(IterableValidationNote(note, index, tp))
    return exc


def _make_list_hook(conv: cattrs.Converter) -> Callable[[object, Any], list[Any]]:
    def structure_list(value: object, tp: Any) -> list[Any]:
        if not isinstance(value, list):
            raise ValueProblem(f"expected a list, got {kind_of(value)}")
        (item_type,) = get_args(tp)
        out: list[Any] = []
        errors: list[Exception] = []
        for i, item in enumerate(value):
            try:
                out.append(conv.structure(item, item_type))
            except Exception as exc:
                errors.append(_noted(exc, f"Structuring {tp} @ index {i}", i, item_type))
        if errors:
            raise IterableValidationError(f"While structuring {tp}", errors, tp)
        return out

    return structure_list


def _make_dict_hook(conv: cattrs.Converter) -> Callable[[object, Any], dict[str, Any]]:
    def structure_dict(value: object, tp: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ValueProblem(f"expected a mapping, got {kind_of(value)}")
        _, item_type = get_args(tp)
        out: dict[str, Any] = {}
        errors: list[Exception] = []
        for key, item in value.items():
            note = f"Structuring {tp} @ key {shown(key)}"
            if not isinstance(key, str):
                problem = KeyProblem(f"expected a string key, got {kind_of(key)}")
                errors.append(_noted(problem, note, key, str))
                continue
            try:
                out[key] = conv.structure(item, item_type)
            except Exception as exc:
                errors.append(_noted(exc, note, key, item_type))
        if errors:
            raise IterableValidationError(f"While structuring {tp}", errors, tp)
        return out

    return structure_dict


def _renames(cls: type[Any]) -> dict[str, Any]:
    return {a.name: override(rename=camel(a.name)) for a in attrs.fields(cls)}


def _origin_is(origin: object) -> Callable[[Any], bool]:
    def predicate(tp: Any) -> bool:
        return get_origin(tp) is origin

    return predicate


def _make_class_hook(conv: cattrs.Converter, cls: type[T]) -> Callable[[object, Any], T]:
    generated = make_dict_structure_fn(cls, conv, **_renames(cls))

    def structure_class(value: object, _: Any) -> T:
        if not isinstance(value, dict):
            raise ValueProblem(f"expected a mapping, got {kind_of(value)}")
        return generated(value, cls)

    return structure_class


def make_converter() -> cattrs.Converter:
    """The strict converter: YAML (camelCase) shapes to and from spec classes."""
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    conv.register_structure_hook(str, _str)
    conv.register_structure_hook(int, _int)
    conv.register_structure_hook(float, _float)
    conv.register_structure_hook(bool, _bool)
    conv.register_structure_hook_func(_origin_is(Literal), _literal)
    conv.register_structure_hook_func(_origin_is(list), _make_list_hook(conv))
    conv.register_structure_hook_func(_origin_is(dict), _make_dict_hook(conv))
    for cls in SPEC_CLASSES:
        conv.register_structure_hook(cls, _make_class_hook(conv, cls))
        conv.register_unstructure_hook(cls, make_dict_unstructure_fn(cls, conv, **_renames(cls)))
    return conv


CONVERTER = make_converter()


def _step(exc: BaseException) -> Path:
    """The path step the enclosing structurer noted on ``exc``."""
    for note in reversed(getattr(exc, "__notes__", [])):
        if isinstance(note, AttributeValidationNote):
            return (camel(note.name),)
        if isinstance(note, IterableValidationNote):
            return (note.index,)
    return ()


def _leaves(exc: BaseException, path: Path) -> Iterator[tuple[Path, BaseException]]:
    if isinstance(exc, ClassValidationError | IterableValidationError):
        for sub in exc.exceptions:
            yield from _leaves(sub, (*path, *_step(sub)))
    else:
        yield path, exc


def _prefixed(path: Path, message: str) -> str:
    where = render_path(path)
    return f"{where}: {message}" if where else message


def _problems(path: Path, exc: BaseException, locate: Locate, locate_key: Locate) -> list[Problem]:
    if isinstance(exc, ForbiddenExtraKeysError):
        known = [camel(a.name) for a in attrs.fields(exc.cl)]
        return [
            (
                locate_key((*path, key)),
                _prefixed(path, f"unknown field {shown(key)}{did_you_mean(key, known)}"),
            )
            for key in sorted(exc.extra_fields, key=repr)
        ]
    if isinstance(exc, KeyError) and path and exc.args == (path[-1],):
        return [(locate(path[:-1]), _prefixed(path[:-1], f"missing required field {path[-1]!r}"))]
    if isinstance(exc, KeyProblem):
        return [(locate_key(path), _prefixed(path, str(exc)))]
    if isinstance(exc, ValueProblem):
        return [(locate(path), _prefixed(path, str(exc)))]
    return [(locate(path), _prefixed(path, f"invalid value ({type(exc).__name__}: {exc})"))]


def structure_located(data: object, locate: Locate, locate_key: Locate) -> s.Cloudlet:
    """Structure one document or raise a SpecError listing every shape problem."""
    try:
        return CONVERTER.structure(data, s.Cloudlet)
    except Exception as exc:  # cattrs raises groups of anything its hooks raise
        problems = [
            p for path, leaf in _leaves(exc, ()) for p in _problems(path, leaf, locate, locate_key)
        ]
        raise SpecError(problems) from None


def unstructure(cloudlet: s.Cloudlet) -> dict[str, Any]:
    """The spec as JSON-able data with the YAML's camelCase keys."""
    return cast(dict[str, Any], CONVERTER.unstructure(cloudlet))


def structure(data: dict[str, Any], filename: str = "<stored>") -> s.Cloudlet:
    """Read back what ``unstructure`` wrote, held to the loader's rules."""

    def nowhere(_path: Path) -> None:
        return None

    try:
        cloudlet = structure_located(data, nowhere, nowhere)
    except SpecError as exc:
        raise SpecError([(None, f"{filename}: {msg}") for _, msg in exc.problems]) from None
    problems = validate(cloudlet, nowhere)
    if problems:
        raise SpecError([(None, f"{filename}: {msg}") for _, msg in problems])
    return cloudlet
