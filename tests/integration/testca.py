"""A throwaway CA for the tests' TLS: a server certificate for 127.0.0.1 and a client one, made
with the openssl command (EC P-256, one day). Shared by the etcd TLS test and the vSphere gateway
test (vcsim serving https with a certificate OpenSSL will verify)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def certificates(d: Path) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, by file name
    (``ca.crt``, ``server.crt``, ``server.key``, ``client.crt``, ``client.key``, ...)."""
    if shutil.which("openssl") is None:
        pytest.fail("the TLS test needs the openssl command: apt-get install openssl")
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca = ["-CA", d / "ca.crt", "-CAkey", d / "ca.key", "-CAcreateserial", "-days", "1"]
    _openssl("req", "-x509", *new_key, "-keyout", d / "ca.key", "-out", d / "ca.crt", "-days", "1",
             "-subj", "/CN=cloudlet-test-ca")  # fmt: skip
    extensions = {
        "server": "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        "client": "extendedKeyUsage=clientAuth\n",
    }
    for name, ext in extensions.items():
        (d / f"{name}.ext").write_text(ext)
        csr, crt = d / f"{name}.csr", d / f"{name}.crt"
        _openssl("req", "-new", *new_key, "-keyout", d / f"{name}.key", "-out", csr,
                 "-subj", f"/CN={name}")  # fmt: skip
        _openssl("x509", "-req", "-in", csr, *ca, "-out", crt, "-extfile", d / f"{name}.ext")
    return {p.name: str(p) for p in d.iterdir()}
