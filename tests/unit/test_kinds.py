"""The model's vocabulary of kinds: accessors and the immutability rule."""

from __future__ import annotations

from cloudlet.model.kinds import (
    EXTERNAL,
    immutable_changes,
    immutable_refusal,
    is_external,
    ref,
    refs,
    with_computed,
)
from cloudlet.model.resources import Observed, Resource

VM = Resource("vm/a", {"image": "i", "flavor": "f", "ports": ("port/a",)}, ["port/a"])


def test_accessors_read_resources_observed_objects_and_raw_attrs_alike() -> None:
    seen = Observed("u", "vm/a", "vm", VM.attrs)
    for source in (VM, seen, VM.attrs):
        assert refs(source, "ports") == ("port/a",)
        assert refs(source, "image") == ()  # not a list
        assert refs(source, "missing") == ()
        assert ref(source, "image") == "i"
        assert ref(source, "ports") is None
    assert is_external(Resource("port/p", {"network": EXTERNAL}))
    assert not is_external(Resource("port/p", {"subnet": "subnet/n"}))


def test_immutable_changes_are_the_set_attributes_that_differ_sorted() -> None:
    moved = {"image": "j", "flavor": "g", "ports": ("port/b",)}
    assert immutable_changes("vm", moved, VM.attrs) == ("image", "ports")
    assert immutable_changes("vm", {**VM.attrs, "flavor": "g"}, VM.attrs) == ()
    # a raw record (lists from JSON) compares in the model's shapes
    assert immutable_changes("vm", VM.attrs, {**VM.attrs, "ports": ["port/a"]}) == ()
    # only what the engine sets counts: an attribute it leaves out is the cloud's
    assert immutable_changes("port", {"network": EXTERNAL}, {"network": EXTERNAL, "x": 1}) == ()
    assert immutable_changes("port", {"network": EXTERNAL}, {"subnet": "subnet/n"}) == ("network",)
    assert immutable_changes("unknown-kind", {"a": 1}, {"a": 2}) == ()


def test_immutable_refusal_names_the_resource_and_attributes() -> None:
    other = Resource(VM.id, {**VM.attrs, "image": "j"}, VM.deps)
    assert immutable_refusal(other, VM.attrs) == "vm/a: cannot change immutable image in place"
    assert immutable_refusal(VM, VM.attrs) is None


def test_an_update_keeps_what_the_cloud_computed_and_nothing_else() -> None:
    old = {"subnet": "subnet/n", "address": "10.0.0.2", "securityGroups": ["sg/a"]}
    new = with_computed("port", {"subnet": "subnet/n", "securityGroups": ()}, old)
    assert new == {"subnet": "subnet/n", "securityGroups": (), "address": "10.0.0.2"}
    # an LB's address is the engine's (the id of what carries it), not the cloud's
    assert with_computed("lb", {"address": "vip/b"}, {"address": "vip/a"}) == {"address": "vip/b"}
