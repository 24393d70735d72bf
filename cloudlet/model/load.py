"""YAML text to validated cloudlet specs, with every problem at file:line:col.

Specs come from operators and from files nobody reviewed, so loading must be
safe and bounded as well as helpful. PyYAML only parses here: nodes are
composed from its event stream without recursion (deep nesting cannot blow
the stack), and converted to plain values by a walk that allows the standard
tags only (no object construction), expands aliases against a node budget
(an alias bomb stops at the budget, fast), rejects duplicate keys (a silent
"last one wins" hides typos), and records where every key and value sits.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Hashable, Iterator
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from cloudlet.errors import Location, SpecError
from cloudlet.model.codec import INT_MAX, INT_MIN, structure_located
from cloudlet.model.spec import Cloudlet
from cloudlet.model.validate import (
    Locate,
    Path,
    Problem,
    camel,
    shown,
    validate,
    validate_documents,
)

MAX_BYTES = 4 * 1024 * 1024
MAX_NODES = 100_000
MAX_DEPTH = 64

_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_CONSTRUCTOR = SafeConstructor()
_YAML = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL = (_YAML + t for t in ("str", "int", "float", "bool", "null"))
SEQ, MAP, MERGE, TIMESTAMP = (_YAML + t for t in ("seq", "map", "merge", "timestamp"))
#: Characters YAML forbids in a stream (PyYAML's own set, plus lone surrogates).
_NON_PRINTABLE = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)


class Locator:
    """Where each key and value of one document sits, by path."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.values: dict[Path, tuple[int, int]] = {}
        self.keys: dict[Path, tuple[int, int]] = {}

    def __call__(self, path: Path) -> Location | None:
        """The value at ``path``, or its nearest ancestor present in the file."""
        return self._find(self.values, tuple(path))

    def key(self, path: Path) -> Location | None:
        found = self.keys.get(tuple(path))
        return Location(self.filename, *found) if found else self(path)

    def _find(self, table: dict[Path, tuple[int, int]], path: Path) -> Location | None:
        while True:
            camelized = tuple(camel(p) if isinstance(p, str) else p for p in path)
            found = table.get(path) or table.get(camelized)
            if found:
                return Location(self.filename, *found)
            if not path:
                return None
            path = path[:-1]


class _Fatal(Exception):
    """A problem after which the rest of the file cannot be read."""

    def __init__(self, node_or_mark: Any, message: str) -> None:
        super().__init__(message)
        self.mark = getattr(node_or_mark, "start_mark", node_or_mark)
        self.message = message


def _pos(mark: Any) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1)


def _short_tag(tag: str) -> str:
    return shown("!!" + tag[len(_YAML) :] if tag.startswith(_YAML) else tag)[1:-1]


class _Open:
    """A collection still being composed; a mapping holds its pending key."""

    __slots__ = ("key", "node")

    def __init__(self, node: SequenceNode | MappingNode) -> None:
        self.node = node
        self.key: Node | None = None

    def add(self, child: Node) -> None:
        if isinstance(self.node, SequenceNode):
            self.node.value.append(child)
        elif self.key is None:
            self.key = child
        else:
            self.node.value.append((self.key, child))
            self.key = None


def _tag(loader: Any, kind: type[Node], event: Any) -> str:
    if event.tag is None or event.tag == "!":
        value = event.value if kind is ScalarNode else None
        return str(loader.resolve(kind, value, event.implicit))
    return str(event.tag)


def _start(loader: Any, event: Any) -> Node:
    start: Any = event.start_mark
    end: Any = event.end_mark
    if isinstance(event, yaml.ScalarEvent):
        return ScalarNode(_tag(loader, ScalarNode, event), event.value, start, end, event.style)
    kind = SequenceNode if isinstance(event, yaml.SequenceStartEvent) else MappingNode
    return kind(_tag(loader, kind, event), [], start, end, event.flow_style)


def _compose_document(loader: Any) -> Node:
    """One document's node graph, iteratively, bounded in depth and size."""
    anchors: dict[str, Node] = {}
    stack: list[_Open] = []
    count = 0
    while True:
        event = loader.get_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor not in anchors:
                raise _Fatal(event.start_mark, f"undefined alias {shown(event.anchor)}")
            node = anchors[event.anchor]
        elif isinstance(event, yaml.ScalarEvent | yaml.CollectionStartEvent):
            count += 1
            if count > MAX_NODES or len(stack) >= MAX_DEPTH:
                too_big = f"document too large (more than {MAX_NODES} nodes)"
                raise _Fatal(event.start_mark, too_big if count > MAX_NODES else _too_deep())
            node = _start(loader, event)
            if event.anchor is not None:
                anchors[event.anchor] = node
            if not isinstance(node, ScalarNode):
                stack.append(_Open(node))  # type: ignore[arg-type]
                continue
        else:  # the end of a collection
            node = stack.pop().node
        if not stack:
            return node
        stack[-1].add(node)


def _too_deep() -> str:
    return f"nesting deeper than {MAX_DEPTH} levels"


def _compose_all(loader: Any) -> Iterator[Node]:
    loader.get_event()  # stream start
    while not loader.check_event(yaml.StreamEndEvent):
        loader.get_event()  # document start
        yield _compose_document(loader)
        loader.get_event()  # document end


class _Walker:
    """Nodes to plain values, recording locations; aliases cost their size."""

    def __init__(self, filename: str) -> None:
        self.locator = Locator(filename)
        self.problems: list[Problem] = []
        self.count = 0

    def problem(self, node: Node, message: str) -> None:
        self.problems.append((Location(self.locator.filename, *_pos(node.start_mark)), message))

    def tick(self, node: Node, depth: int) -> None:
        self.count += 1
        if self.count > MAX_NODES:
            raise _Fatal(node, f"document too large after alias expansion (> {MAX_NODES} nodes)")
        if depth > MAX_DEPTH:
            raise _Fatal(node, _too_deep())

    def walk(self, node: Node, path: Path, depth: int) -> object:
        self.tick(node, depth)
        self.locator.values[path] = _pos(node.start_mark)
        if isinstance(node, ScalarNode):
            return self.scalar(node)
        if isinstance(node, SequenceNode) and node.tag == SEQ:
            return [self.walk(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        if isinstance(node, MappingNode) and node.tag == MAP:
            return self.mapping(node, path, depth)
        self.problem(node, f"tag {_short_tag(node.tag)} is not allowed")
        return None

    def scalar(self, node: ScalarNode) -> object:
        """Standard scalars only; timestamps stay strings (no clock types in specs)."""
        if node.tag in (STR, TIMESTAMP, MERGE):
            return node.value
        if node.tag == NULL:
            return None
        construct = {
            INT: _CONSTRUCTOR.construct_yaml_int,
            FLOAT: _CONSTRUCTOR.construct_yaml_float,
            BOOL: _CONSTRUCTOR.construct_yaml_bool,
        }.get(node.tag)
        if construct is None:
            self.problem(node, f"tag {_short_tag(node.tag)} is not allowed")
            return None
        try:
            value = construct(node)
        except (ValueError, KeyError, IndexError, OverflowError):
            self.problem(node, f"invalid {_short_tag(node.tag)} value {shown(node.value)}")
            return None
        if isinstance(value, int) and not INT_MIN <= value <= INT_MAX:
            self.problem(node, "integer out of range (more than 64 bits)")
            return None
        return value

    def mapping(self, node: MappingNode, path: Path, depth: int) -> dict[Hashable, object]:
        out: dict[Hashable, object] = {}
        for key, key_node, value_node in self.pairs(node, depth):
            self.locator.keys[(*path, key)] = _pos(key_node.start_mark)
            out[key] = self.walk(value_node, (*path, key), depth + 1)
        return out

    def pairs(self, node: MappingNode, depth: int) -> list[tuple[Hashable, Node, Node]]:
        """Effective pairs: explicit keys first, then merged keys not overridden."""
        explicit: dict[Hashable, tuple[Node, Node]] = {}
        merged: list[tuple[Hashable, Node, Node]] = []
        for key_node, value_node in node.value:
            self.tick(key_node, depth + 1)
            if key_node.tag == MERGE and isinstance(key_node, ScalarNode):
                merged += self.merge(value_node, depth + 1)
                continue
            key = self.key(key_node)
            if key is _BAD_KEY:
                continue
            if key in explicit:
                first = explicit[key][0].start_mark.line + 1
                self.problem(key_node, f"duplicate key {shown(key)} (first at line {first})")
                continue
            explicit[key] = (key_node, value_node)
        out = [(key, k, v) for key, (k, v) in explicit.items()]
        taken = set(explicit)
        for key, key_node, value_node in merged:
            if key not in taken:
                taken.add(key)
                out.append((key, key_node, value_node))
        return out

    def merge(self, node: Node, depth: int) -> list[tuple[Hashable, Node, Node]]:
        """``<<: *a`` or ``<<: [*a, *b]``; earlier sources win, as in YAML 1.1."""
        self.tick(node, depth)
        sources = node.value if isinstance(node, SequenceNode) and node.tag == SEQ else [node]
        out: list[tuple[Hashable, Node, Node]] = []
        for source in sources:
            if isinstance(source, MappingNode) and source.tag == MAP:
                self.tick(source, depth + 1)
                out += self.pairs(source, depth + 1)
            else:
                self.problem(source, "a merge (<<) takes a mapping or a list of mappings")
        return out

    def key(self, node: Node) -> Hashable:
        if not isinstance(node, ScalarNode):
            self.problem(node, "mapping keys must be scalars")
            return _BAD_KEY
        before = len(self.problems)
        key = self.scalar(node)
        return _BAD_KEY if len(self.problems) > before else key


_BAD_KEY: Hashable = object()


def _index_location(text: str, index: int, filename: str) -> Location:
    line_start = text.rfind("\n", 0, index) + 1
    return Location(filename, text.count("\n", 0, index) + 1, index - line_start + 1)


def _yaml_problem(exc: yaml.YAMLError, text: str, filename: str) -> Problem:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        message = exc.problem or exc.context or "invalid YAML"
        if exc.problem and exc.context:
            at = f" at line {exc.context_mark.line + 1}" if exc.context_mark else ""
            message += f" ({exc.context}{at})"
        where = Location(filename, *_pos(mark)) if mark else Location(filename, 1, 1)
        return where, message
    if isinstance(exc, yaml.reader.ReaderError):
        offset = len(text.encode("utf-8")[: exc.position].decode("utf-8", "ignore"))
        return _index_location(text, offset, filename), f"unreadable: {exc.reason}"
    return Location(filename, 1, 1), f"invalid YAML: {exc}"


def _documents(text: str, filename: str) -> tuple[list[tuple[object, Locator]], list[Problem]]:
    """The non-empty documents as plain values, and the problems that stopped others."""
    docs: list[tuple[object, Locator]] = []
    problems: list[Problem] = []
    loader = _LOADER(text)
    try:
        for root in _compose_all(loader):
            walker = _Walker(filename)
            value = walker.walk(root, (), 0)
            problems += walker.problems
            if value is not None and not walker.problems:
                docs.append((value, walker.locator))
    except yaml.YAMLError as exc:
        problems.append(_yaml_problem(exc, text, filename))
    except _Fatal as exc:
        problems.append((Location(filename, *_pos(exc.mark)), exc.message))
    finally:
        loader.dispose()
    return docs, problems


def _precheck(text: str, filename: str) -> list[Problem]:
    if len(text) > MAX_BYTES:
        return [(Location(filename, 1, 1), f"file too large (more than {MAX_BYTES} bytes)")]
    bad = _NON_PRINTABLE.search(text)
    if bad is not None:
        message = f"character U+{ord(bad.group()):04X} is not allowed in YAML"
        return [(_index_location(text, bad.start(), filename), message)]
    return []


def _structure_all(docs: list[tuple[object, Locator]]) -> tuple[list[Cloudlet], list[Problem]]:
    cloudlets: list[Cloudlet] = []
    locators: list[Locate] = []
    problems: list[Problem] = []
    for data, locator in docs:
        try:
            cloudlet = structure_located(data, locator, locator.key)
        except SpecError as exc:
            problems += exc.problems
            continue
        problems += validate(cloudlet, locator)
        cloudlets.append(cloudlet)
        locators.append(locator)
    problems += validate_documents(cloudlets, locators)
    return cloudlets, problems


def load_text(text: str, filename: str) -> list[Cloudlet]:
    """Every cloudlet in ``text``, or a SpecError listing every problem found.

    Callers handle SpecError only, so a bug here must not surface as another
    exception on some odd input: it is reported, located at the file's start.
    """
    try:
        return _load_text(text, filename)
    except SpecError:
        raise
    except Exception as exc:
        message = f"internal error while loading ({type(exc).__name__}: {shown(str(exc), 200)})"
        raise SpecError([(Location(filename, 1, 1), message)]) from exc


def _load_text(text: str, filename: str) -> list[Cloudlet]:
    problems = _precheck(text, filename)
    if problems:
        raise SpecError(problems)
    docs, problems = _documents(text, filename)
    cloudlets, more = _structure_all(docs)
    problems += more
    if not docs and not problems:
        problems.append((Location(filename, 1, 1), "no documents: the file holds no cloudlet"))
    if problems:
        raise SpecError(list(dict.fromkeys(problems)))
    return cloudlets


def load_bytes(data: bytes, filename: str) -> list[Cloudlet]:
    """As ``load_text``, for raw file contents (UTF-8, optionally with a BOM)."""
    if len(data) > MAX_BYTES:
        raise SpecError(
            [(Location(filename, 1, 1), f"file too large (more than {MAX_BYTES} bytes)")]
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        col = len(data[line_start : exc.start].decode("utf-8", "replace")) + 1
        where = Location(filename, data.count(b"\n", 0, exc.start) + 1, col)
        raise SpecError([(where, f"not valid UTF-8: {exc.reason}")]) from None
    return load_text(text.removeprefix("\ufeff"), filename)


def _refuse_special(path: str) -> None:
    """Only a regular file: opening a FIFO with no writer would block forever,
    and a device could be read without end."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):  # a directory: open says so
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
        raise SpecError([(None, f"{path}: not a regular file ({kind}); give a file path")])


def load_file(path: str) -> list[Cloudlet]:
    """Read at most a little over ``MAX_BYTES`` and load it."""
    try:
        _refuse_special(path)
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise SpecError([(None, f"{path}: cannot read: {exc.strerror or exc}")]) from None
    return load_bytes(data, path)
