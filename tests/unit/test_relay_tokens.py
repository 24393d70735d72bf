"""Relay tokens and frames (issue 12): the pure parts of ``cloudlet/relay``,
with the clock injected (``now``) and a real embedded store."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudlet.errors import CloudletError
from cloudlet.relay import protocol, tokens
from cloudlet.store.records import TOKENS
from cloudlet.store.sqlite import SqliteStore, open_store


@pytest.fixture(name="store")
def sqlite_store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = open_store(tmp_path)
    yield store
    store.close()


def test_a_token_opens_its_vm_until_it_expires(store: SqliteStore) -> None:
    token, text = tokens.issue(store, "edge-1", "vm/game", ttl=300, now=1000.0)
    assert text.startswith(token.id + ".")
    assert tokens.check(store, text, "edge-1", "vm/game", now=1299.0) == token
    with pytest.raises(tokens.TokenRefused, match=r"expired 0 s ago"):
        tokens.check(store, text, "edge-1", "vm/game", now=1300.0)


@pytest.mark.parametrize(
    ("cloudlet", "vm", "why"),
    [
        ("edge-1", "vm/chat", "is for edge-1 vm/game, not edge-1 vm/chat"),
        ("edge-2", "vm/game", "is for edge-1 vm/game, not edge-2 vm/game"),
    ],
)
def test_a_token_opens_no_other_vm(store: SqliteStore, cloudlet: str, vm: str, why: str) -> None:
    _, text = tokens.issue(store, "edge-1", "vm/game", ttl=300, now=0.0)
    with pytest.raises(tokens.TokenRefused, match=why):
        tokens.check(store, text, cloudlet, vm, now=1.0)


@pytest.mark.parametrize("mangle", ["wrong-secret", "no-dot", "unknown-id", "empty", "path"])
def test_a_wrong_token_is_unknown(store: SqliteStore, mangle: str) -> None:
    token, text = tokens.issue(store, "edge-1", "vm/game", ttl=300, now=0.0)
    bad = {
        "wrong-secret": f"{token.id}.{'x' * 32}",
        "no-dot": token.id,
        "unknown-id": "000000000000." + text.partition(".")[2],
        "empty": "",
        "path": f"../{text}",
    }[mangle]
    with pytest.raises(tokens.TokenRefused, match=r"^token refused: unknown token$"):
        tokens.check(store, bad, "edge-1", "vm/game", now=1.0)


def test_the_store_keeps_no_secret_and_expired_tokens_are_purged(store: SqliteStore) -> None:
    _, old = tokens.issue(store, "edge-1", "vm/game", ttl=10, now=0.0)
    _, new = tokens.issue(store, "edge-1", "vm/game", ttl=100, now=0.0)
    values = b"".join(e.value for e in store.list(TOKENS))
    assert old.partition(".")[2].encode() not in values
    assert new.partition(".")[2].encode() not in values
    assert tokens.purge_expired(store, now=50.0) == 1
    assert tokens.check(store, new, "edge-1", "vm/game", now=50.0)
    with pytest.raises(tokens.TokenRefused, match="unknown token"):
        tokens.check(store, old, "edge-1", "vm/game", now=50.0)


@pytest.mark.parametrize("ttl", [0, -1, tokens.MAX_TTL + 1])
def test_a_lifetime_out_of_range_is_refused(store: SqliteStore, ttl: float) -> None:
    with pytest.raises(CloudletError, match="--ttl must be between"):
        tokens.issue(store, "edge-1", "vm/game", ttl=ttl, now=0.0)


def test_lines_and_frames_cross_a_socket_in_pieces() -> None:
    a, b = socket.socketpair()
    with a, b:
        wire = protocol.line({"ok": True}) + protocol.frame(protocol.DATA, b"hi" * 1000)
        wire += protocol.resize(50, 132) + protocol.exit_frame(-1)
        conn = protocol.Conn(b)
        writer = threading.Thread(  # a byte stream: any split
            target=lambda: [a.sendall(wire[i : i + 7]) for i in range(0, len(wire), 7)]
        )
        writer.start()
        got: list[tuple[bytes, bytes]] = []
        assert conn.read_line(5) == {"ok": True}
        while len(got) < 3:
            assert conn.fill()
            got += conn.frames()
        writer.join()
    assert got == [
        (protocol.DATA, b"hi" * 1000),
        (protocol.RESIZE, b"\x00\x32\x00\x84"),
        (protocol.EXIT, b"\xff\xff\xff\xff"),
    ]


def test_a_frame_too_big_is_a_protocol_error() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(protocol.HEADER.pack(protocol.DATA, protocol.MAX_FRAME + 1))
        conn = protocol.Conn(b)
        assert conn.fill()
        with pytest.raises(protocol.ProtocolError, match="frame of"):
            conn.frames()


@pytest.mark.parametrize(
    ("hello", "why"),
    [
        ({"kind": "exec", "cloudlet": "c", "vm": "v"}, "kind must be one of shell, logs"),
        ({"kind": "shell", "cloudlet": "c", "vm": "v", "cmd": "ls"}, "cmd must be a list"),
        ({"kind": "logs", "cloudlet": "c"}, "vm missing"),
    ],
)
def test_a_bad_session_request_is_refused(hello: dict[str, object], why: str) -> None:
    with pytest.raises(protocol.ProtocolError, match=why):
        protocol.session_request(hello)


def test_a_vm_is_named_as_in_the_spec_or_by_id() -> None:
    assert protocol.vm_id("game") == protocol.vm_id("vm/game") == "vm/game"
