"""The LB document round-trips and refuses what does not describe an LB."""

import pytest

from cloudlet.lb import Vrrp
from cloudlet.lb.document import DocumentError, build, decode, encode

LISTENER = {"port": 443, "publicPort": 8443, "protocol": "tcp", "targets": ("vm/game", "vm/b")}


def _cfg(vrrp: Vrrp | None = None):
    return build(
        "lb/root",
        [("lb-listener/root.tcp.443", LISTENER)],
        "198.18.0.5",
        {"vm/game": "10.0.0.5", "vm/b": None},
        "/run/x",
        vrrp,
    )


def test_build_resolves_backends_and_leaves_out_those_without_an_address():
    (listener,) = _cfg().listeners
    assert (listener.port, listener.bind, listener.protocol) == (8443, "198.18.0.5", "tcp")
    assert [(b.id, b.address, b.port) for b in listener.backends] == [("vm/game", "10.0.0.5", 443)]


@pytest.mark.parametrize(
    "vrrp", [None, Vrrp("v", "eth0", "10.0.0.9/24", 10, 200, ("10.0.0.3",), "10.0.0.2")]
)
def test_a_document_round_trips_without_its_runtime_dir(vrrp):
    text = encode(_cfg(vrrp))
    assert "/run/x" not in text
    assert decode(text, "/run/x") == _cfg(vrrp)
    assert decode(text, "/run/y").runtime_dir == "/run/y"


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda t: "{", "not JSON"),
        (lambda t: "[]", "not a JSON object"),
        (lambda t: t.replace('"version":1', '"version":2'), "version 2"),
        (lambda t: t.replace('"port":8443', '"port":99999'), "99999"),
        (lambda t: t.replace('"tcp"', '"sctp"'), "sctp"),
    ],
)
def test_a_bad_document_is_refused_with_what_is_wrong(edit, says):
    with pytest.raises(DocumentError, match=says):
        decode(edit(encode(_cfg())), "/run/x")
