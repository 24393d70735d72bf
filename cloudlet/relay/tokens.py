"""Relay access tokens: short-lived, bound to one cloudlet and one VM.

An operator issues one (``cloudlet token issue NAME VM``); the token is
printed once and the store keeps only the SHA-256 of its secret, under
``/cloudlet/tokens/<id>`` (``store/records.py``). A token reads
``<id>.<secret>``: the id names it in the audit records and log lines,
the secret proves it. The relay checks a token on every session; it is
not used up by a session, so one token opens several until it expires.

The clock is an argument (``now``), as everywhere in the store's records.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import attrs

from cloudlet.errors import CloudletError
from cloudlet.store.base import Store
from cloudlet.store.records import TOKENS, decode, encode

#: Longest lifetime an operator may give a token (seconds): a day.
MAX_TTL = 86400.0


class TokenRefused(CloudletError):
    """A token that does not open the session asked for (one line, to the user)."""


@attrs.frozen
class Token:
    id: str
    cloudlet: str
    vm: str
    issued: float
    expires: float


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue(store: Store, cloudlet: str, vm: str, *, ttl: float, now: float) -> tuple[Token, str]:
    """A new token for ``vm`` (its id) of ``cloudlet``; returns it and the
    token text, which is nowhere else."""
    if not 0 < ttl <= MAX_TTL:
        raise CloudletError(f"--ttl must be between 0 and {MAX_TTL:g} seconds, not {ttl:g}")
    token = Token(secrets.token_hex(6), cloudlet, vm, now, now + ttl)
    secret = secrets.token_urlsafe(24)
    value = {**attrs.asdict(token), "sha256": _digest(secret)}
    store.put(TOKENS + token.id, encode(value), expect_revision=0)
    return token, f"{token.id}.{secret}"


def check(store: Store, text: str, cloudlet: str, vm: str, *, now: float) -> Token:
    """The token ``text`` if it opens ``vm`` of ``cloudlet`` now; else
    ``TokenRefused`` saying why in one line."""
    tid, _, secret = text.partition(".")
    entry = store.get(TOKENS + tid) if tid.isalnum() and secret else None
    if entry is None:
        raise TokenRefused("token refused: unknown token")
    data = decode(entry.value)
    if not hmac.compare_digest(str(data.get("sha256", "")), _digest(secret)):
        raise TokenRefused("token refused: unknown token")
    token = Token(tid, data["cloudlet"], data["vm"], data["issued"], data["expires"])
    if now >= token.expires:
        raise TokenRefused(f"token refused: {tid} expired {now - token.expires:.0f} s ago")
    if (token.cloudlet, token.vm) != (cloudlet, vm):
        raise TokenRefused(
            f"token refused: {tid} is for {token.cloudlet} {token.vm}, not {cloudlet} {vm}"
        )
    return token


def purge_expired(store: Store, *, now: float) -> int:
    """Delete tokens expired before ``now``; how many (the relay calls it
    now and then so the store does not grow)."""
    gone = 0
    for entry in store.list(TOKENS):
        if float(decode(entry.value).get("expires", 0)) <= now and store.delete(entry.key):
            gone += 1
    return gone
