"""Relay access tokens: short-lived, bound to one cloudlet and one VM, and
good for one session (or the few the operator issued it for).

An operator issues one (``cloudlet token issue NAME VM``); the token is
printed once and the store keeps only the SHA-256 of its secret, under
``/cloudlet/tokens/<id>`` (``store/records.py``). A token reads
``<id>.<secret>``: the id names it in the audit records and log lines,
the secret proves it.

A session uses the token up (``use``): the record's count of sessions
opened goes up by a compare-and-swap on its revision, so two relays (or
two connections to one) racing with one token cannot both get the last
session; the loser is refused as the reuse it is. A token that was used
keeps its record until it expires, so a reuse is refused as "used", not
"unknown", and audited as such. Why one session by default: a token is a
bearer credential that travels through a user's shell history and
environment; spent on its first use, a copy seen later opens nothing.

The clock is an argument (``now``), as everywhere in the store's records.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

import attrs

from cloudlet.errors import CloudletError, ConflictError
from cloudlet.store.base import Entry, Store
from cloudlet.store.records import TOKENS, decode, encode

#: Longest lifetime an operator may give a token (seconds): a day.
MAX_TTL = 86400.0
#: Most sessions one token may open.
MAX_SESSIONS = 100
#: Compare-and-swap attempts before a contended token is refused.
_CAS_ATTEMPTS = 16


class TokenRefused(CloudletError):
    """A token that does not open the session asked for (one line, to the user)."""


@attrs.frozen
class Token:
    id: str
    cloudlet: str
    vm: str
    issued: float
    expires: float
    sessions: int = 1


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def token_id(text: str) -> str | None:
    """The id part of a token's text, if it is shaped like one: what an
    audit record may name (never the secret)."""
    tid = text.partition(".")[0]
    return tid if tid.isalnum() and tid.isascii() and len(tid) <= 32 else None


def issue(
    store: Store, cloudlet: str, vm: str, *, ttl: float, now: float, sessions: int = 1
) -> tuple[Token, str]:
    """A new token for ``vm`` (its id) of ``cloudlet``, good for ``sessions``
    sessions; returns it and the token text, which is nowhere else."""
    if not 0 < ttl <= MAX_TTL:
        raise CloudletError(f"--ttl must be between 0 and {MAX_TTL:g} seconds, not {ttl:g}")
    if not 1 <= sessions <= MAX_SESSIONS:
        raise CloudletError(f"--sessions must be between 1 and {MAX_SESSIONS}, not {sessions}")
    token = Token(secrets.token_hex(6), cloudlet, vm, now, now + ttl, sessions)
    secret = secrets.token_urlsafe(24)
    value = {**attrs.asdict(token), "used": 0, "sha256": _digest(secret)}
    store.put(TOKENS + token.id, encode(value), expect_revision=0)
    return token, f"{token.id}.{secret}"


def _read(store: Store, text: str) -> tuple[Entry, dict[str, Any], Token]:
    """The stored record of the token ``text`` if its secret is right."""
    tid, _, secret = text.partition(".")
    entry = store.get(TOKENS + tid) if token_id(text) and secret else None
    if entry is None:
        raise TokenRefused("token refused: unknown token")
    data = decode(entry.value)
    if not hmac.compare_digest(str(data.get("sha256", "")), _digest(secret)):
        raise TokenRefused("token refused: unknown token")
    sessions = int(data.get("sessions", 1))  # a record from before sessions were counted: 1
    token = Token(tid, data["cloudlet"], data["vm"], data["issued"], data["expires"], sessions)
    return entry, data, token


def _fits(token: Token, cloudlet: str, vm: str, now: float) -> None:
    if now >= token.expires:
        raise TokenRefused(f"token refused: {token.id} expired {now - token.expires:.0f} s ago")
    if (token.cloudlet, token.vm) != (cloudlet, vm):
        raise TokenRefused(
            f"token refused: {token.id} is for {token.cloudlet} {token.vm}, not {cloudlet} {vm}"
        )


def check(store: Store, text: str, cloudlet: str, vm: str, *, now: float) -> Token:
    """The token ``text`` if it opens ``vm`` of ``cloudlet`` now (not using
    it up); else ``TokenRefused`` saying why in one line."""
    _, data, token = _read(store, text)
    _fits(token, cloudlet, vm, now)
    _left(token, data)
    return token


def _left(token: Token, data: dict[str, Any]) -> int:
    used = int(data.get("used", 0))
    if used >= token.sessions:
        plural = "" if token.sessions == 1 else "s"
        raise TokenRefused(
            f"token refused: {token.id} was used ({token.sessions} session{plural}); issue another"
        )
    return used


def use(store: Store, text: str, cloudlet: str, vm: str, *, now: float) -> Token:
    """Like ``check``, and one of the token's sessions is taken, atomically:
    of several uses at once, only as many as it has sessions left succeed."""
    for _ in range(_CAS_ATTEMPTS):
        entry, data, token = _read(store, text)
        _fits(token, cloudlet, vm, now)
        used = _left(token, data)
        try:
            store.put(
                entry.key, encode({**data, "used": used + 1}), expect_revision=entry.mod_revision
            )
        except ConflictError:
            continue  # another use (or a purge) came first: read it again
        return token
    raise TokenRefused(f"token refused: {token.id} is being used by others at once")


def give_back(store: Store, token: Token) -> None:
    """A session the token was used for never opened: it may open one again.
    A token gone meanwhile (purged) stays gone."""
    for _ in range(_CAS_ATTEMPTS):
        entry = store.get(TOKENS + token.id)
        if entry is None:
            return
        data = decode(entry.value)
        used = max(0, int(data.get("used", 0)) - 1)
        try:
            store.put(entry.key, encode({**data, "used": used}), expect_revision=entry.mod_revision)
        except ConflictError:
            continue
        return


def purge_expired(store: Store, *, now: float) -> int:
    """Delete tokens expired before ``now``; how many (the relay calls it
    now and then so the store does not grow)."""
    gone = 0
    for entry in store.list(TOKENS):
        if float(decode(entry.value).get("expires", 0)) <= now and store.delete(entry.key):
            gone += 1
    return gone
