"""Hostile and broken input: only ever a located SpecError, never a crash.

Every test runs with both PyYAML parsers (libyaml's and the pure-Python one)
because their errors, limits and marks differ.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudlet.errors import SpecError
from cloudlet.model import load
from cloudlet.model.load import MAX_BYTES, load_bytes, load_file, load_text

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = (ROOT / "examples" / "no-router.yaml").read_text()
LINE = re.compile(r"^F\.yaml:(\d+):(\d+): ")

LOADERS = [yaml.SafeLoader] + (
    [yaml.CSafeLoader] if getattr(yaml, "__with_libyaml__", False) else []
)


@pytest.fixture(params=LOADERS, ids=lambda c: c.__name__, autouse=True)
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(load, "_LOADER", request.param)
    yield


def rendered(exc: SpecError) -> list[str]:
    lines = exc.render().splitlines()
    assert lines
    for line in lines:
        assert LINE.match(line), line
    return lines


def fails(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_text(text, "F.yaml")
    return rendered(info.value)


def at(lines: list[str], line: int) -> str:
    """The one problem reported on ``line``."""
    found = [x for x in lines if LINE.match(x) and int(LINE.match(x).group(1)) == line]  # type: ignore[union-attr]
    assert len(found) == 1, lines
    return found[0]


# --- malformed YAML ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("a: [1, 2\nb: 3\n", 2, "expected ',' or ']'"),
        ("a: b: c\n", 1, "mapping values are not allowed"),
        ("a: 1\n b: 2\n", 2, "mapping values are not allowed"),
        ("a: 'unclosed\n", 2, "quoted scalar"),
        ("a:\n\t- 1\n", 2, ""),
        ("- a\nb: c\n", 2, "expected"),
        ("a: *nothing\n", 1, "nothing"),
        ("{a: 1}}\n", 1, ""),
        ("%YAML 9.9\n---\na: 1\n", 1, ""),
    ],
)
def test_syntax_errors_name_their_line(text: str, line: int, words: str) -> None:
    problem = fails(text)[-1]  # a document before the error may have problems too
    assert int(LINE.match(problem).group(1)) == line, problem  # type: ignore[union-attr]
    assert words.lower() in problem.lower()


def test_syntax_error_column() -> None:
    assert fails("apiVersion: cloudlet/v1\nkind: Cloudlet: x\n")[0].startswith("F.yaml:2:15: ")


def test_syntax_error_in_a_later_document_keeps_earlier_problems() -> None:
    text = EXAMPLE.replace("name: berlin-1", "name: Berlin") + "---\na: [\n"
    lines = fails(text)
    assert any("invalid name 'Berlin'" in x for x in lines)
    assert any("expected" in x or "found" in x for x in lines if "Berlin" not in x)


def test_duplicate_keys() -> None:
    text = EXAMPLE.replace("  dataPath: no-router\n", "  dataPath: no-router\n  dataPath: router\n")
    (line,) = fails(text)
    assert line.startswith("F.yaml:20:3: duplicate key 'dataPath' (first at line 19)")


def test_merged_keys_may_be_overridden_but_not_duplicated() -> None:
    assert fails("a: &a {x: 1}\nb:\n  <<: *a\n  x: 2\n  y: 1\n  y: 2\n")[0].startswith(
        "F.yaml:6:3: duplicate key 'y'"
    )


@pytest.mark.parametrize("text", ["? [a]\n: b\n", "{[1]: 2}\n", "? {a: 1}\n: x\n"])
def test_complex_keys_are_rejected(text: str) -> None:
    assert "mapping keys must be scalars" in fails(text)[0]


@pytest.mark.parametrize("text", ["a:\n  <<: 1\n", "a:\n  <<: [x, {b: 1}]\n"])
def test_bad_merge_values(text: str) -> None:
    assert "merge (<<) takes a mapping" in fails(text)[0]


# --- tags ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tagged",
    [
        '!!python/object/apply:os.system ["touch {marker}"]',
        "!!python/object/apply:subprocess.check_output [[touch, {marker}]]",
        "!!python/name:os.system",
        "!!python/object/new:type [x, [], {{}}]",
        "!foo bar",
        "!<tag:example.com,2000:thing> 1",
        "!!binary aGVsbG8=",
        "!!set {{a, b}}",
        "!!omap [{{a: 1}}]",
        "!Thing {{a: 1}}",
    ],
)
def test_only_standard_tags_are_allowed(tagged: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    name = tagged.format(marker=marker)
    text = f"apiVersion: cloudlet/v1\nkind: Cloudlet\nmetadata:\n  name: {name}\n"
    (line,) = fails(text)
    assert line.startswith("F.yaml:4:9: tag ") and "is not allowed" in line
    assert not marker.exists()


def test_bad_tag_in_a_key() -> None:
    assert fails("!!python/name:os.system : 1\n")[0].startswith(
        "F.yaml:1:1: tag !!python/name:os.system"
    )


@pytest.mark.parametrize(
    "text",
    ["a: !!int x\n", "a: !!int ''\n", "a: !!float x\n", "a: !!bool maybe\n", "a: !!float ''\n"],
)
def test_explicit_standard_tags_with_bad_values(text: str) -> None:
    assert fails(text)[0].startswith("F.yaml:1:4: invalid !!")


def test_huge_integer_literal() -> None:
    assert "invalid !!int value" in fails("a: " + "9" * 5000 + "\n")[0]


def test_explicit_standard_tags_are_fine() -> None:
    text = EXAMPLE.replace("name: berlin-1", "name: !!str berlin-1").replace(
        "latencyMs: 20", "latencyMs: !!int 20"
    )
    assert load_text(text, "F.yaml")[0].spec.platform.latency_ms == 20


# --- size, depth and alias bombs -------------------------------------------------------------

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""

MERGE_BOMB = (
    "a: &a {"
    + ", ".join(f"k{i}: {i}" for i in range(50))
    + "}\n"
    + "".join(
        f"m{n}: &m{n} {{<<: [{', '.join([f'*m{n - 1}' if n else '*a'] * 20)}]}}\n" for n in range(8)
    )
)


@pytest.mark.parametrize("bomb", [BILLION_LAUGHS, MERGE_BOMB], ids=["laughs", "merges"])
def test_alias_bombs_fail_fast(bomb: str) -> None:
    # Fast because expansion stops counting at the bound; timing is bench's job.
    lines = fails(bomb)
    assert any("document too large after alias expansion" in x for x in lines), lines


def test_alias_bomb_inside_a_spec() -> None:
    text = EXAMPLE.replace(
        "  labels: {region: eu-central, tier: edge}\n", ""
    ) + BILLION_LAUGHS.replace("\n", "\n  ").replace("a: &a", "  x-a: &a")
    with pytest.raises(SpecError):
        load_text(text, "F.yaml")


def test_recursive_alias() -> None:
    assert "nesting deeper than 64" in fails("a: &a [*a]\n")[0]


@pytest.mark.parametrize("depth", [65, 500, 5000])
def test_deep_flow_nesting(depth: int) -> None:
    (line,) = fails("a: " + "[" * depth + "]" * depth + "\n")
    assert line.startswith("F.yaml:1:") and ("nesting" in line or "depth" in line)


def test_deep_block_nesting() -> None:
    text = "".join("  " * i + "a:\n" for i in range(100))
    (line,) = fails(text)
    assert line.startswith("F.yaml:64:") and "nesting deeper than 64" in line


def test_nesting_within_the_limit_is_fine() -> None:
    with pytest.raises(SpecError) as info:
        load_text("a: " + "[" * 60 + "]" * 60 + "\n", "F.yaml")
    assert "nesting" not in info.value.render()


def test_too_many_nodes() -> None:
    lines = fails("- 1\n" * 200_000)
    assert "too large" in lines[0]
    # Refused where the count passed the bound, not after reading all 200,000.
    match = LINE.match(lines[0])
    assert match is not None and int(match.group(1)) <= load.MAX_NODES + 1, lines[0]


def test_huge_text_is_refused_before_parsing() -> None:
    assert fails("#" * (MAX_BYTES + 10))[0].startswith("F.yaml:1:1: file too large")


def test_huge_file(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as f:
        f.write(b"a: [" + b"1, " * (2 * MAX_BYTES // 3) + b"]\n")
    with pytest.raises(SpecError) as info:
        load_file(str(path))
    assert info.value.problems[0][0] is not None
    assert "too large" in info.value.render()


def test_large_comment_within_the_limit() -> None:
    assert "no documents" in fails("# " + "x" * (MAX_BYTES - 100) + "\n")[0]


# --- garbage -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (bytes(range(256)), (2, 118)),
        (b"a: 1\nb: \xc3\x28\n", (2, 4)),
        (b"\xff\xfe\x00a\x00:\x00 \x001\x00", (1, 1)),
        (b"a: \xe2\x82\n", (1, 4)),
    ],
)
def test_binary_garbage(data: bytes, where: tuple[int, int]) -> None:
    with pytest.raises(SpecError) as info:
        load_bytes(data, "F.yaml")
    (line,) = rendered(info.value)
    assert line.startswith(f"F.yaml:{where[0]}:{where[1]}: not valid UTF-8")


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("a: 1\nb: x\x00y\n", "2:5"),
        ("\x07", "1:1"),
        ("a: '\ud800'\n", "1:5"),
        ("a: \x1b[31m\n", "1:4"),
    ],
)
def test_forbidden_characters(text: str, where: str) -> None:
    (line,) = fails(text)
    assert line.startswith(f"F.yaml:{where}: character U+")


@pytest.mark.parametrize("text", ["hello", "42", "[1, 2]", "null", "true", "- - - -", "''"])
def test_documents_that_are_not_mappings(text: str) -> None:
    lines = fails(text)
    assert lines[0].startswith("F.yaml:1:")


# --- fuzzing ----------------------------------------------------------------------


def check_only_spec_errors(call: Any, *args: Any) -> None:
    try:
        call(*args)
    except SpecError as exc:
        assert "internal error" not in "\n".join(rendered(exc))


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.text())
def test_fuzz_text(text: str) -> None:
    check_only_spec_errors(load_text, text, "F.yaml")


@FUZZ
@given(st.binary())
def test_fuzz_bytes(data: bytes) -> None:
    check_only_spec_errors(load_bytes, data, "F.yaml")


YAML_TOKENS = [
    "a",
    ": ",
    "- ",
    "\n",
    "  ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "&x ",
    "*x",
    "<<: ",
    "? ",
    "!!int ",
    "!t ",
    "'",
    '"',
    "#",
    "---\n",
    "...\n",
    "|\n",
    ">\n",
    "%TAG ! x\n",
    "1",
    "~",
    "\t",
]


@FUZZ
@given(st.lists(st.sampled_from(YAML_TOKENS), max_size=60))
def test_fuzz_yaml_like_token_soup(tokens: list[str]) -> None:
    check_only_spec_errors(load_text, "".join(tokens), "F.yaml")


SPEC_WORDS = [
    "apiVersion",
    "kind",
    "metadata",
    "spec",
    "name",
    "labels",
    "platform",
    "type",
    "dataPath",
    "networks",
    "cidr",
    "securityGroups",
    "rules",
    "ports",
    "remote",
    "protocol",
    "loadBalancers",
    "clusters",
    "vms",
    "network",
    "expose",
    "loadBalancer",
    "port",
    "masters",
    "workers",
    "vip",
    "latencyMs",
    "failureRate",
    "lbSubnet",
    "redundancy",
    "flavor",
    "image",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(
        [
            "cloudlet/v1",
            "Cloudlet",
            "fake",
            "10.0.0.0/24",
            "tcp",
            "vip",
            "a",
            "443",
            "shared",
            "router",
        ]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(SPEC_WORDS) | st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=30,
)


@FUZZ
@given(values)
def test_fuzz_random_structures(value: object) -> None:
    check_only_spec_errors(load_text, yaml.safe_dump(value), "F.yaml")


@FUZZ
@given(st.data())
def test_fuzz_mutated_example(data: st.DataObject) -> None:
    doc = yaml.safe_load(EXAMPLE)
    for _ in range(data.draw(st.integers(1, 4))):
        node: Any = doc
        while isinstance(node, dict | list) and node and data.draw(st.booleans()):
            key = data.draw(
                st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node)))
            )
            if not isinstance(node[key], dict | list) or data.draw(st.booleans()):
                node[key] = data.draw(values)
                break
            node = node[key]
    check_only_spec_errors(load_text, yaml.safe_dump(doc), "F.yaml")
