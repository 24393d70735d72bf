"""The relay's audit trail in the store: every session, and every refusal.

A session is a record under ``/cloudlet/audit/<cloudlet>/`` written at its
start and again at its end (``event: session``). A refused attempt is one
record too (``event: refused``): a token that is wrong, expired, another
VM's or used up, a user whose cloudlet no site serves, a site without a
certificate, with one the site CA did not sign, or with one that does not
name the cloudlet it claims. It says who (the peer's address, the site's
id and certificate name, the token's id), when, what was asked (role,
cloudlet, VM, kind, command) and why (the refusal's line). Never the
token's secret nor its hash: the id alone names a token.

A refusal about one cloudlet is filed under that cloudlet; one about none,
or about a name no cloudlet can have, under ``/cloudlet/audit/-/`` (no
cloudlet name starts with ``-``). Refusals cost the refused nothing, so
their records are capped (``REFUSALS_PER_MINUTE``): past the cap a refusal
is only logged, and the next record written says how many were not.
"""

from __future__ import annotations

import logging
import re
import secrets
from typing import Any

import attrs

from cloudlet.relay import tokens
from cloudlet.store.base import Store
from cloudlet.store.records import AUDIT, encode

log = logging.getLogger("cloudlet.relay")

#: Refusal records written per minute at most (each refusal is logged anyway).
REFUSALS_PER_MINUTE = 120
#: Cloudlet names a refused site claimed that its record lists at most.
MAX_NAMES = 20
_NAME = re.compile(r"[a-z][a-z0-9-]{0,39}")
NOBODY = "-"


@attrs.define(eq=False)
class Session:
    id: str
    token: tokens.Token
    request: dict[str, Any]
    peer: str
    site: str
    start: float
    site_cert: str | None = None
    end: float | None = None
    up: int = 0  # user -> site
    down: int = 0  # site -> user
    outcome: str = "open"

    def record(self) -> dict[str, Any]:
        req = self.request
        return {
            "event": "session",
            "session": self.id,
            "token": self.token.id,
            "cloudlet": req["cloudlet"],
            "vm": req["vm"],
            "kind": req["kind"],
            "cmd": req["cmd"],
            "peer": self.peer,
            "site": self.site,
            "siteCert": self.site_cert,
            "start": self.start,
            "end": self.end,
            "bytesUp": self.up,
            "bytesDown": self.down,
            "outcome": self.outcome,
        }


def filed_under(cloudlet: object) -> str:
    """The audit prefix's cloudlet part for a record about ``cloudlet``."""
    return cloudlet if isinstance(cloudlet, str) and _NAME.fullmatch(cloudlet) else NOBODY


def key(cloudlet: object, at: float, rid: str) -> str:
    return f"{AUDIT}{filed_under(cloudlet)}/{at:017.6f}-{rid[:12]}"


def write_session(store: Store, session: Session) -> None:
    store.put(key(session.request["cloudlet"], session.start, session.id), encode(session.record()))


def refusal(
    *, at: float, role: str, peer: str, reason: str, hello: dict[str, Any] | None = None,
    site_cert: str | None = None, cloudlet: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The record of one refused attempt; ``hello``: what the dialler asked
    (only its known fields are kept, and of a token only its id)."""
    hello = hello or {}
    rec: dict[str, Any] = {
        "event": "refused",
        "time": at,
        "role": role,
        "peer": peer,
        "site": _text(hello.get("site")) if role in ("site", "data") else None,
        "siteCert": site_cert,
        "token": tokens.token_id(str(hello.get("token") or "")),
        "cloudlet": cloudlet if cloudlet is not None else _text(hello.get("cloudlet")),
        "vm": _text(hello.get("vm")),
        "kind": _text(hello.get("kind")),
        "cmd": _cmd(hello.get("cmd")),
        "reason": reason,
    }
    names = hello.get("cloudlets")
    if role == "site" and cloudlet is None and isinstance(names, list):
        rec["cloudlets"] = [_text(n) for n in names[:MAX_NAMES]]
    return rec


def _text(value: object, limit: int = 200) -> str | None:
    return value[:limit] if isinstance(value, str) else None


def _cmd(value: object) -> list[str] | None:
    if not isinstance(value, list):
        return None
    return [a[:200] for a in value[:32] if isinstance(a, str)]


class RefusalCap:
    """How many refusal records may still be written this minute; what was
    left out is told in the next one. Used from one thread (the loop's)."""

    def __init__(self, per_minute: int = REFUSALS_PER_MINUTE) -> None:
        self.per_minute = per_minute
        self.window = -1
        self.written = 0
        self.dropped = 0

    def admit(self, rec: dict[str, Any], now: float) -> bool:
        window = int(now // 60)
        if window != self.window:
            self.window, self.written = window, 0
        if self.written >= self.per_minute:
            if not self.dropped:
                log.warning("more than %d refusals this minute: only logged", self.per_minute)
            self.dropped += 1
            return False
        self.written += 1
        if self.dropped:
            rec["notAuditedBefore"], self.dropped = self.dropped, 0
        return True


def write_refusal(store: Store, rec: dict[str, Any]) -> None:
    store.put(key(rec["cloudlet"], rec["time"], secrets.token_hex(6)), encode(rec))
