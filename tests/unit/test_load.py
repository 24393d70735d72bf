"""Loading YAML into spec classes: shapes, defaults, locations, the codec."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudlet.errors import Location, SpecError
from cloudlet.model import codec
from cloudlet.model.load import MAX_BYTES, load_bytes, load_file, load_text
from cloudlet.model.spec import Cloudlet, Platform

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))

MINIMAL = """\
apiVersion: cloudlet/v1
kind: Cloudlet
metadata:
  name: site-a
spec:
  networks:
    - {name: internal, cidr: 10.0.0.0/24}
  vms:
    - {name: game, network: internal}
"""


def problems(text: str, filename: str = "F.yaml") -> list[str]:
    """The rendered lines of the SpecError ``text`` must raise."""
    with pytest.raises(SpecError) as info:
        load_text(text, filename)
    lines = info.value.render().splitlines()
    assert lines, "a SpecError must carry at least one problem"
    for line in lines:
        assert re.match(rf"^{re.escape(filename)}:\d+:\d+: ", line), line
    return lines


def test_minimal_document_gets_defaults() -> None:
    (cloudlet,) = load_text(MINIMAL, "F.yaml")
    assert cloudlet.name == "site-a"
    assert cloudlet.spec.platform == Platform()
    assert cloudlet.spec.data_path == "no-router"
    assert cloudlet.spec.defaults.image == "ubuntu-22.04"
    assert cloudlet.spec.vms[0].security_groups == []
    assert cloudlet.spec.lb_subnet == "192.168.255.0/24"


def test_camel_case_keys_map_to_snake_case_fields() -> None:
    text = MINIMAL.replace(
        "spec:\n",
        "spec:\n  dataPath: floating-ip\n  lbSubnet: 192.168.7.0/24\n  driftPolicy: report\n"
        "  platform: {type: fake, latencyMs: 5, jitterMs: 1, failureRate: 0.25, seed: 9}\n",
    )
    (c,) = load_text(text, "F.yaml")
    assert (c.spec.data_path, c.spec.lb_subnet, c.spec.drift_policy) == (
        "floating-ip",
        "192.168.7.0/24",
        "report",
    )
    assert c.spec.platform == Platform("fake", 5, 1, 0.25, 9)


def test_int_is_fine_for_a_float_field() -> None:
    text = MINIMAL.replace("spec:\n", "spec:\n  platform: {failureRate: 0}\n")
    (c,) = load_text(text, "F.yaml")
    assert c.spec.platform.failure_rate == 0.0
    assert isinstance(c.spec.platform.failure_rate, float)


def test_several_documents_and_empty_ones_skipped() -> None:
    other = MINIMAL.replace("site-a", "site-b")
    text = f"---\n{MINIMAL}---\n---\n# only a comment\n---\n{other}"
    assert [c.name for c in load_text(text, "F.yaml")] == ["site-a", "site-b"]


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing here\n", "---\n", "---\n...\n---\n~\n"])
def test_a_file_without_documents_is_an_error(text: str) -> None:
    (line,) = problems(text)
    assert line.startswith("F.yaml:1:1: no documents")


def test_merge_keys_and_anchors() -> None:
    text = """\
apiVersion: cloudlet/v1
kind: Cloudlet
metadata: {name: site-a}
spec:
  networks:
    - {name: internal, cidr: 10.0.0.0/24}
  vms:
    - &small {name: one, network: internal, flavor: m1.small, image: base}
    - <<: *small
      name: two
    - <<: [{name: three, image: other}, *small]
"""
    (c,) = load_text(text, "F.yaml")
    assert [(v.name, v.flavor, v.image) for v in c.spec.vms] == [
        ("one", "m1.small", "base"),
        ("two", "m1.small", "base"),
        ("three", "m1.small", "other"),
    ]


def test_timestamps_stay_strings() -> None:
    text = MINIMAL.replace("  name: site-a\n", "  name: site-a\n  labels: {since: 2024-01-02}\n")
    (c,) = load_text(text, "F.yaml")
    assert c.metadata.labels == {"since": "2024-01-02"}


def test_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"no-router.yaml", "router.yaml", "floating-ip.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_loads_cleanly(path: Path) -> None:
    cloudlets = load_file(str(path))
    assert cloudlets
    for cloudlet in cloudlets:
        assert cloudlet.spec.platform.type in ("fake", "openstack", "vsphere", "local")
        assert codec.structure(codec.unstructure(cloudlet)) == cloudlet


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_stay_small(path: Path) -> None:
    expand = pytest.importorskip("cloudlet.model.expand")
    for cloudlet in load_file(str(path)):
        assert len(expand.expand(cloudlet).resources) <= 40


def test_example_features() -> None:
    by_file = {p.name: load_file(str(p))[0] for p in EXAMPLES}
    nr = by_file["no-router.yaml"].spec
    assert nr.data_path == "no-router"
    assert {lb.type for lb in nr.load_balancers} == {"shared", "dedicated"}
    on_root = [v for v in nr.vms if v.expose and v.expose.load_balancer == "root"]
    assert sum(1 for v in on_root for p in v.expose.ports if p.port == 443) >= 2  # type: ignore[union-attr]
    assert any(c.vip and c.expose for c in nr.clusters)
    assert nr.security_groups
    rt = by_file["router.yaml"].spec
    assert rt.data_path == "router" and rt.clusters
    assert any(lb.redundancy == "vip" for lb in rt.load_balancers)
    fi = by_file["floating-ip.yaml"].spec
    assert fi.data_path == "floating-ip" and len(fi.vms) >= 2
    assert any(lb.redundancy == "vip" and lb.type == "shared" for lb in fi.load_balancers)


# --- wrong shapes, each at its line and column ---------------------------------


def test_str_field_rejects_an_int_at_its_value() -> None:
    text = MINIMAL.replace("cidr: 10.0.0.0/24", "cidr: 10")
    (line,) = problems(text)
    assert line.startswith("F.yaml:7:30: spec.networks[0].cidr: expected a string, got int")


@pytest.mark.parametrize("value", ["true", "~", "[a]", "{a: b}", "1.5"])
def test_str_field_rejects_other_types(value: str) -> None:
    text = MINIMAL.replace("{name: game, network: internal}", f"{{name: game, network: {value}}}")
    (line,) = problems(text)
    assert "spec.vms[0].network: expected a string" in line


@pytest.mark.parametrize(("value", "got"), [('"3"', "string"), ("true", "bool"), ("1.0", "float")])
def test_int_field_is_strict(value: str, got: str) -> None:
    text = MINIMAL + f"  clusters:\n    - {{name: k, network: internal, masters: {value}}}\n"
    (line,) = problems(text)
    assert line.startswith(
        f"F.yaml:11:45: spec.clusters[0].masters: expected an integer, got {got}"
    )


def test_bool_field_is_strict() -> None:
    text = MINIMAL + '  clusters:\n    - {name: k, network: internal, vip: "yes"}\n'
    (line,) = problems(text)
    assert "spec.clusters[0].vip: expected true or false, got string" in line


def test_literal_rejects_other_values() -> None:
    text = MINIMAL.replace("spec:\n", "spec:\n  dataPath: bridge\n")
    (line,) = problems(text)
    assert line.startswith(
        "F.yaml:6:13: spec.dataPath: must be one of: no-router, router, floating-ip"
    )


def test_unknown_field_points_at_the_key_and_suggests() -> None:
    text = MINIMAL.replace(
        "{name: game, network: internal}", "{name: game, network: internal, flavour: x}"
    )
    (line,) = problems(text)
    assert line.startswith(
        "F.yaml:9:39: spec.vms[0]: unknown field 'flavour' (did you mean 'flavor'?)"
    )


def test_snake_case_key_suggests_camel_case() -> None:
    text = MINIMAL.replace("spec:\n", "spec:\n  data_path: router\n")
    (line,) = problems(text)
    assert line.startswith("F.yaml:6:3: spec: unknown field 'data_path' (did you mean 'dataPath'?)")


def test_missing_required_field_points_at_the_enclosing_mapping() -> None:
    text = MINIMAL.replace("{name: internal, cidr: 10.0.0.0/24}", "{name: internal}")
    (line,) = problems(text)
    assert line == "F.yaml:7:7: spec.networks[0]: missing required field 'cidr'"


def test_wrong_container_types() -> None:
    text = MINIMAL.replace("  vms:\n    - {name: game, network: internal}\n", "  vms: game\n")
    text = text.replace("metadata:\n  name: site-a\n", "metadata:\n  name: site-a\n  labels: [a]\n")
    lines = problems(text)
    assert any("metadata.labels: expected a mapping, got list" in x for x in lines)
    assert any("spec.vms: expected a list, got string" in x for x in lines)


def test_label_with_non_string_key_points_at_the_key() -> None:
    text = MINIMAL.replace("  name: site-a\n", "  name: site-a\n  labels:\n    7: seven\n")
    (line,) = problems(text)
    assert line.startswith("F.yaml:6:5: metadata.labels[7]: expected a string key, got int")


def test_all_shape_problems_are_reported_at_once() -> None:
    text = """\
apiVersion: cloudlet/v1
kind: Cloudlet
metadata: {name: site-a}
spec:
  dataPath: bridge
  networks:
    - {name: 1, cidr: 10.0.0.0/24}
  vms:
    - {name: a, network: internal, bogus: 1}
    - {network: internal}
"""
    lines = problems(text)
    assert [x.split(": ")[0] for x in lines] == [
        "F.yaml:5:13",
        "F.yaml:7:14",
        "F.yaml:9:36",
        "F.yaml:10:7",
    ]


def test_document_that_is_not_a_mapping() -> None:
    assert problems("- a\n- b\n") == ["F.yaml:1:1: expected a mapping, got list"]


def test_problems_from_several_documents_are_all_reported() -> None:
    text = (
        MINIMAL.replace("cidr: 10.0.0.0/24", "cidr: 10")
        + "---\n"
        + MINIMAL.replace("kind:", "knd:")
    )
    lines = problems(text)
    assert any(x.startswith("F.yaml:7:") for x in lines)
    assert any(
        x.startswith("F.yaml:11:1: ") and "missing required field 'kind'" in x for x in lines
    )
    assert any(x.startswith("F.yaml:12:1: ") and "unknown field 'knd'" in x for x in lines)


# --- files and bytes ----------------------------------------------------------------


def test_load_file_reads_and_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(MINIMAL.replace("cidr: 10.0.0.0/24", "cidr: 10"))
    with pytest.raises(SpecError) as info:
        load_file(str(path))
    assert info.value.problems[0][0] == Location(str(path), 7, 30)


def test_load_file_accepts_a_bom(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    assert load_file(str(path))[0].name == "site-a"


def test_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        load_file(str(tmp_path / "nope.yaml"))


def test_invalid_utf8_is_located() -> None:
    data = MINIMAL.encode().replace(b"site-a", b"site-\xff")
    with pytest.raises(SpecError) as info:
        load_bytes(data, "F.yaml")
    (problem,) = info.value.problems
    assert problem[0] == Location("F.yaml", 4, 14)
    assert "not valid UTF-8" in problem[1]


def test_file_size_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * (MAX_BYTES + 1))
    with pytest.raises(SpecError, match="too large"):
        load_file(str(path))


# --- codec ----------------------------------------------------------------------------


def test_codec_round_trip_is_exact_and_json_able() -> None:
    for path in EXAMPLES:
        for cloudlet in load_file(str(path)):
            data = codec.unstructure(cloudlet)
            assert data["apiVersion"] == "cloudlet/v1"
            assert "dataPath" in data["spec"] and "data_path" not in data["spec"]
            again = json.loads(json.dumps(data))
            assert codec.structure(again) == cloudlet
            assert codec.unstructure(codec.structure(again)) == data


def test_codec_structure_is_as_strict_as_the_loader() -> None:
    (cloudlet,) = load_text(MINIMAL, "F.yaml")
    data = codec.unstructure(cloudlet)
    data["spec"]["networks"][0]["cidr"] = 10
    data["spec"]["vms"][0]["flavour"] = "x"
    with pytest.raises(SpecError) as info:
        codec.structure(data, "stored/site-a")
    text = info.value.render()
    assert "stored/site-a: spec.networks[0].cidr: expected a string, got int" in text
    assert "unknown field 'flavour'" in text


def test_codec_structure_runs_semantic_validation() -> None:
    (cloudlet,) = load_text(MINIMAL, "F.yaml")
    data = codec.unstructure(cloudlet)
    data["spec"]["vms"][0]["network"] = "elsewhere"
    with pytest.raises(SpecError, match="unknown network 'elsewhere'"):
        codec.structure(data)


def test_codec_returns_a_cloudlet() -> None:
    (cloudlet,) = load_text(MINIMAL, "F.yaml")
    assert isinstance(codec.structure(codec.unstructure(cloudlet)), Cloudlet)


def strategy_for(tp: Any) -> st.SearchStrategy[Any]:
    """Any value of a spec type, valid or not, within what the codec accepts."""
    origin, args = get_origin(tp), get_args(tp)
    simple: dict[Any, st.SearchStrategy[Any]] = {
        str: st.text(max_size=6),
        int: st.integers(codec.INT_MIN, codec.INT_MAX),
        float: st.floats(allow_nan=False),
        bool: st.booleans(),
        type(None): st.none(),
    }
    if tp in simple:
        return simple[tp]
    if origin is Literal:
        return st.sampled_from(args)
    if origin is list:
        return st.lists(strategy_for(args[0]), max_size=2)
    if origin is dict:
        return st.dictionaries(st.text(max_size=4), strategy_for(args[1]), max_size=2)
    if origin in (Union, UnionType):
        return st.one_of([strategy_for(a) for a in args])
    hints = get_type_hints(tp)
    return st.builds(tp, **{f.name: strategy_for(hints[f.name]) for f in attrs.fields(tp)})


@settings(max_examples=200, deadline=None)
@given(strategy_for(Cloudlet))
def test_codec_round_trip_property(cloudlet: Cloudlet) -> None:
    """Any spec, valid or not, survives unstructure/structure unchanged."""
    data = codec.unstructure(cloudlet)
    assert codec.structure_located(data, lambda _: None, lambda _: None) == cloudlet
