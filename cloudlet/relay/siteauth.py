"""Who may be a site: the relay's TLS and the site certificate's names.

A site receives users' sessions, so a relay lets only authenticated sites
register: each presents a client certificate signed by the CA the relay
was given (``--site-ca``), and the certificate says which cloudlets its
holder may serve, as subjectAltName URIs ``cloudlet:NAME``. NAME may be a
shell-style pattern (``cloudlet:edge-*``, ``cloudlet:*``), since one site
serves every cloudlet of its store and cloudlet names match
``[a-z][a-z0-9-]*``, so ``*``, ``?`` and ``[`` mean nothing else. Why URIs
and not the CN or a DNS name: a site certificate is also an ordinary TLS
client certificate whose CN and DNS names name a host; a ``cloudlet:`` URI
cannot be mistaken for one, nor a host name for a grant.

Users present no certificate (their token is the proof), so the relay asks
for one without requiring it and refuses a site connection without one.
A relay run with ``--insecure-unauthenticated-sites`` asks for none and
lets any connection be a site: for a test bench only.
"""

from __future__ import annotations

import ssl
from fnmatch import fnmatchcase
from typing import Any

#: The subjectAltName URI scheme of a site certificate's cloudlet grants.
SCHEME = "cloudlet:"


def server_context(cert: str, key: str, site_ca: str | None) -> ssl.SSLContext:
    """The relay's TLS: its certificate; with ``site_ca``, a client
    certificate is asked for and, when presented, must verify against that
    CA (the handshake fails otherwise)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if site_ca is not None:
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(site_ca)
    return ctx


def grants(peercert: dict[str, Any] | None) -> tuple[str, ...]:
    """The cloudlet patterns a verified certificate (``getpeercert()``) names."""
    alt = (peercert or {}).get("subjectAltName", ())
    return tuple(
        value[len(SCHEME) :]
        for kind, value in alt
        if kind == "URI" and value.startswith(SCHEME) and len(value) > len(SCHEME)
    )


def covers(patterns: tuple[str, ...], cloudlet: str) -> bool:
    return any(fnmatchcase(cloudlet, p) for p in patterns)


def subject(peercert: dict[str, Any] | None) -> str | None:
    """The certificate's common name, for the log and the audit."""
    for rdn in (peercert or {}).get("subject", ()):
        for attr, value in rdn:
            if attr == "commonName":
                return str(value)
    return None


def handshake_refusal(err: Exception) -> str | None:
    """Why a failed TLS handshake was the relay refusing a site's certificate
    (the one client certificate check there is), or None when it was
    something else: a client that did not trust the relay, a scanner."""
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"site certificate refused: {err.verify_message}"
    if isinstance(err, ssl.SSLError) and err.reason == "CERTIFICATE_VERIFY_FAILED":
        return "site certificate refused: it does not verify against --site-ca"
    return None
