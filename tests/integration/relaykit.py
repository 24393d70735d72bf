"""What the relay's tests share: throwaway certificates (``cryptography``:
the relay's own, self-signed for 127.0.0.1; a site CA; site certificates
it signs naming the cloudlets they may serve as subjectAltName URIs
``cloudlet:NAME``, ``cloudlet/relay/siteauth.py``), the relay and the site
side as real processes, and the audit records in an embedded store."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = ec.EllipticCurvePrivateKey
_USAGES = "content_commitment key_encipherment data_encipherment key_agreement"
CA_USAGE = {
    **dict.fromkeys([*_USAGES.split(), "encipher_only", "decipher_only"], False),
    **dict.fromkeys(["digital_signature", "key_cert_sign", "crl_sign"], True),
}


def two_vms(name: str, platform: str, cidr: str) -> str:
    """A cloudlet of two VMs, ``game`` and ``chat``, on ``platform``."""
    return textwrap.dedent(
        f"""\
        apiVersion: cloudlet/v1
        kind: Cloudlet
        metadata: {{name: {name}}}
        spec:
          platform: {{type: {platform}}}
          dataPath: no-router
          networks: [{{name: internal, cidr: {cidr}}}]
          vms:
            - {{name: game, network: internal}}
            - {{name: chat, network: internal}}
        """
    )


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(where: Path, stem: str, cert: x509.Certificate, key: Key) -> tuple[Path, Path]:
    cert_path, key_path = where / f"{stem}.pem", where / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _builder(subject: x509.Name, issuer: x509.Name, key: Key) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
    )


def make_cert(where: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA) and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("cloudlet test relay")
    cert = (
        _builder(name, name, key)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return _write(where, "relay", cert, key)


class SiteCA:
    """A CA that signs site certificates; ``path``: its certificate (``--site-ca``)."""

    def __init__(self, where: Path, name: str = "cloudlet test site CA") -> None:
        self.where = where
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = _name(name)
        self.cert = (
            _builder(self.name, self.name, self.key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(**CA_USAGE), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        stem = name.replace(" ", "-")
        self.path = where / f"{stem}.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def site(self, cn: str, *cloudlets: str) -> tuple[Path, Path]:
        """A client certificate for site ``cn`` granting ``cloudlets``
        (names or patterns), and its key."""
        key = ec.generate_private_key(ec.SECP256R1())
        alt = [x509.UniformResourceIdentifier(f"cloudlet:{c}") for c in cloudlets]
        builder = _builder(_name(cn), self.name, key).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        if alt:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        return _write(self.where, f"site-{cn}", builder.sign(self.key, hashes.SHA256()), key)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def argv(state: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "cloudlet", "--state-dir", str(state), *args]


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CLOUDLET_")}


def wait_for(what: str, check: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g} s"
        time.sleep(0.05)


class Relay:
    """The relay process on ``port``, restartable; ``site_ca`` None: run
    with unauthenticated sites."""

    def __init__(
        self, state: Path, port: int, cert: Path, key: Path, log: Path, site_ca: Path | None
    ) -> None:
        self.state, self.port, self.cert, self.key, self.log = state, port, cert, key, log
        self.site_ca = site_ca
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        sites = (
            ("--site-ca", str(self.site_ca))
            if self.site_ca
            else ("--insecure-unauthenticated-sites",)
        )
        args = ("relay", "--listen", self.address, *sites)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                argv(self.state, *args, "--tls-cert", str(self.cert), "--tls-key", str(self.key)),
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env(),
            )  # fmt: skip
        wait_for("the relay's port", self._accepts)

    def _accepts(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)


class Agent:
    """A ``cloudlet relay-agent`` process: the site side, with a site
    certificate (``cert``: its certificate and key) or none."""

    def __init__(
        self, state: Path, relay: Relay, site: str, log: Path, cert: tuple[Path, Path] | None
    ) -> None:
        tls = ["--tls-cert", str(cert[0]), "--tls-key", str(cert[1])] if cert else []
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                argv(state, "relay-agent", "--relay", relay.address, "--tls-ca", str(relay.cert),
                     *tls, "--site-id", site),
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env(),
            )  # fmt: skip

    def said(self) -> str:
        return self.log.read_text()

    def registrations(self) -> int:
        return self.said().count("registered with relay")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)


def audit_records(state: Path, under: str) -> list[dict[str, Any]]:
    """The audit records filed under ``under`` (a cloudlet, or ``-``)."""
    with sqlite3.connect(state / "state.db") as db:
        rows = db.execute(
            "SELECT value FROM kv WHERE key LIKE ? ORDER BY key", (f"/cloudlet/audit/{under}/%",)
        )
        return [json.loads(v) for (v,) in rows]
