"""Relay tokens, frames, site certificates' grants and audit records
(issue 12): the parts of ``cloudlet/relay`` that need no connection, with
the clock injected (``now``) and a real embedded store."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudlet.errors import CloudletError
from cloudlet.relay import audit, protocol, siteauth, tokens
from cloudlet.store.base import Entry
from cloudlet.store.records import TOKENS, decode, encode
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


def test_a_token_opens_one_session_and_is_refused_as_used_after(store: SqliteStore) -> None:
    token, text = tokens.issue(store, "edge-1", "vm/game", ttl=300, now=0.0)
    assert tokens.check(store, text, "edge-1", "vm/game", now=1.0) == token  # checking uses none
    assert tokens.use(store, text, "edge-1", "vm/game", now=1.0) == token
    why = rf"^token refused: {token.id} was used \(1 session\); issue another$"
    with pytest.raises(tokens.TokenRefused, match=why):
        tokens.use(store, text, "edge-1", "vm/game", now=2.0)
    with pytest.raises(tokens.TokenRefused, match=why):
        tokens.check(store, text, "edge-1", "vm/game", now=2.0)


def test_a_refused_use_uses_nothing_and_a_session_not_opened_is_given_back(
    store: SqliteStore,
) -> None:
    token, text = tokens.issue(store, "edge-1", "vm/game", ttl=300, now=0.0)
    with pytest.raises(tokens.TokenRefused, match="is for edge-1 vm/game"):
        tokens.use(store, text, "edge-1", "vm/chat", now=1.0)
    tokens.use(store, text, "edge-1", "vm/game", now=1.0)
    tokens.give_back(store, token)
    assert tokens.use(store, text, "edge-1", "vm/game", now=2.0) == token


def test_a_token_for_more_sessions_opens_that_many(store: SqliteStore) -> None:
    token, text = tokens.issue(store, "edge-1", "vm/game", ttl=300, now=0.0, sessions=3)
    assert token.sessions == 3
    for _ in range(3):
        tokens.use(store, text, "edge-1", "vm/game", now=1.0)
    with pytest.raises(tokens.TokenRefused, match=r"was used \(3 sessions\)"):
        tokens.use(store, text, "edge-1", "vm/game", now=1.0)


@pytest.mark.parametrize("sessions", [0, -1, tokens.MAX_SESSIONS + 1])
def test_a_session_count_out_of_range_is_refused(store: SqliteStore, sessions: int) -> None:
    with pytest.raises(CloudletError, match="--sessions must be between 1 and 100"):
        tokens.issue(store, "edge-1", "vm/game", ttl=60, now=0.0, sessions=sessions)
    assert store.list(TOKENS) == []


def test_a_token_stored_before_sessions_were_counted_opens_one(store: SqliteStore) -> None:
    token, text = tokens.issue(store, "edge-1", "vm/game", ttl=300, now=0.0)
    entry = store.get(TOKENS + token.id)
    assert entry is not None
    old = {k: v for k, v in decode(entry.value).items() if k not in ("sessions", "used")}
    store.put(entry.key, encode(old))
    tokens.use(store, text, "edge-1", "vm/game", now=1.0)
    with pytest.raises(tokens.TokenRefused, match="was used"):
        tokens.use(store, text, "edge-1", "vm/game", now=1.0)


class ReadTogether:
    """The store, but each thread's first read of a token waits until every
    user has read it: all of them then write knowing the same revision,
    the interleaving in which a use without compare-and-swap lets all in."""

    def __init__(self, store: SqliteStore, users: int) -> None:
        self.store, self.barrier = store, threading.Barrier(users, timeout=10)
        self.waited: set[int] = set()

    def get(self, key: str) -> Entry | None:
        entry = self.store.get(key)
        if threading.get_ident() not in self.waited:
            self.waited.add(threading.get_ident())
            self.barrier.wait()
        return entry

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)


def _race(uses: list[object], text: str) -> list[str]:
    """Each of ``uses`` (a store) uses the token at once: what each got."""
    got: list[str] = []

    def one(store: object) -> None:
        try:
            tokens.use(store, text, "edge-1", "vm/game", now=1.0)  # type: ignore[arg-type]
            got.append("session")
        except tokens.TokenRefused as err:
            got.append(str(err))

    threads = [threading.Thread(target=one, args=(s,)) for s in uses]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return sorted(got)


def test_two_uses_at_once_cannot_both_open_a_session(store: SqliteStore) -> None:
    token, text = tokens.issue(store, "edge-1", "vm/game", ttl=300, now=0.0)
    together = ReadTogether(store, 2)
    got = _race([together, together], text)
    assert got == ["session", f"token refused: {token.id} was used (1 session); issue another"]


def test_concurrent_uses_through_separate_store_handles_open_as_many_as_issued(
    tmp_path: Path,
) -> None:
    """Like relays on one store: each thread its own handle of the file."""
    handles = [open_store(tmp_path) for _ in range(6)]
    try:
        for sessions in (1, 2):
            _, text = tokens.issue(handles[0], "edge-1", "vm/game", ttl=300, now=0.0,
                                   sessions=sessions)  # fmt: skip
            got = _race(list(handles), text)
            assert got.count("session") == sessions, got
            assert all("was used" in g for g in got if g != "session"), got
    finally:
        for h in handles:
            h.close()


def test_a_site_certificate_grants_the_cloudlets_its_uris_name() -> None:
    cert = {
        "subject": ((("organizationName", "edge"),), (("commonName", "site-1"),)),
        "subjectAltName": (
            ("DNS", "edge-9"), ("URI", "cloudlet:edge-1"), ("URI", "cloudlet:lab-*"),
            ("URI", "https://cloudlet:x"), ("URI", "cloudlet:"),
        ),
    }  # fmt: skip
    grants = siteauth.grants(cert)
    assert grants == ("edge-1", "lab-*")
    assert siteauth.subject(cert) == "site-1"
    assert [siteauth.covers(grants, n) for n in ("edge-1", "lab-7", "edge-9", "edge-10")] == [
        True,
        True,
        False,
        False,
    ]  # fmt: skip  (a DNS name is a host, not a grant)
    assert siteauth.grants(None) == () and siteauth.subject(None) is None


def test_a_refusal_record_names_who_what_and_why_but_no_secret() -> None:
    hello = {
        "role": "user", "token": "abc123.the-secret", "cloudlet": "edge-1", "vm": "vm/game",
        "kind": "shell", "cmd": ["id"], "site": "ignored for a user",
    }  # fmt: skip
    rec = audit.refusal(at=5.0, role="user", peer="10.0.0.1:5", reason="token refused: x",
                        hello=hello)  # fmt: skip
    assert rec == {
        "event": "refused", "time": 5.0, "role": "user", "peer": "10.0.0.1:5", "site": None,
        "siteCert": None, "token": "abc123", "cloudlet": "edge-1", "vm": "vm/game",
        "kind": "shell", "cmd": ["id"], "reason": "token refused: x",
    }  # fmt: skip
    assert "the-secret" not in json.dumps(rec)
    assert audit.key("edge-1", 5.0, "r" * 20).startswith("/cloudlet/audit/edge-1/")
    for odd in ("../x", "a/b", "", None, "Edge"):
        assert audit.key(odd, 5.0, "r").startswith("/cloudlet/audit/-/")


def test_refusal_records_are_capped_per_minute_and_the_next_says_how_many_were_not() -> None:
    cap = audit.RefusalCap(per_minute=2)
    recs: list[dict[str, object]] = [{} for _ in range(5)]
    assert [cap.admit(r, 60.0 + i) for i, r in enumerate(recs[:4])] == [True, True, False, False]
    assert cap.admit(recs[4], 120.0)  # the next minute
    assert recs[4] == {"notAuditedBefore": 2} and recs[:2] == [{}, {}]


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
