"""Cloud-init user data that turns a fresh VM into a platform VM running cloudlet.

``cloudlet export onboard`` (and ``export heat --platform-vm``) render it; this
module is the pure part: an :class:`Onboarding` in, ``#cloud-config`` text out.
Reading the wheel and the unit file is the caller's.

What the VM gets, and why:

- ``/usr/local/sbin/cloudlet-install VERSION``: installs ``cloudlet==VERSION``
  into a venv of its own, ``/opt/cloudlet/VERSION``, and points
  ``/opt/cloudlet/current`` (and ``/usr/local/bin/cloudlet``) at it. First boot
  runs it; an upgrade runs it again with the new version and restarts the
  daemon, so the old venv stays for a rollback and the running daemon never
  sees its files change under it.
- ``/etc/cloudlet/reconcile.env``: the store's endpoints and TLS paths. No
  secret goes into user data (Nova keeps it and any process on the VM can read
  it from the metadata service): TLS material is named by path, files the
  operator provisions; systemd hands them to the daemon's dynamic user with
  ``LoadCredential`` (the files stay root-only).
- the systemd unit, verbatim from the package (``contrib/`` links to the same
  file), started by ``runcmd``.
"""

from __future__ import annotations

import base64
import re
from importlib import resources

import attrs
import yaml

from cloudlet.errors import CloudletError

UNIT_NAME = "cloudlet-reconcile.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT_NAME}"
TLS_DROPIN = f"/etc/systemd/system/{UNIT_NAME}.d/etcd-tls.conf"
ENV_PATH = "/etc/cloudlet/reconcile.env"
INSTALL_ENV = "/etc/cloudlet/install.env"
INSTALLER = "/usr/local/sbin/cloudlet-install"
WHEELS = "/opt/cloudlet/wheels"
#: Nova refuses user data longer than this once base64-encoded.
NOVA_USER_DATA_MAX = 65535

_VERSION = re.compile(r"[0-9]+(\.[0-9]+)*([a-z]+[0-9]*)?(\.(post|dev)[0-9]+)*(\+[a-z0-9.]+)?")
_ENDPOINT = re.compile(r"[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}")
_URL = re.compile(r"https?://[^\s'\"\\`$]+")
_PATH = re.compile(r"/[A-Za-z0-9._/@+\-]+")


class OnboardError(CloudletError):
    """An onboarding setting that would render broken or unsafe user data."""


@attrs.frozen
class Wheel:
    """A cloudlet wheel to ship inside the user data (its file name and bytes)."""

    name: str
    data: bytes


@attrs.frozen
class Onboarding:
    version: str
    etcd: str
    index: str | None = None
    wheel: Wheel | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None


def reconcile_unit() -> str:
    """The daemon's systemd unit, as the package ships it."""
    return resources.files("cloudlet").joinpath("data", UNIT_NAME).read_text(encoding="utf-8")


def check(o: Onboarding) -> None:
    """Refuse what would end up as a broken line in a shell script, an
    environment file or a unit: every value is written unquoted."""
    if not _VERSION.fullmatch(o.version):
        raise OnboardError(f"--version {o.version!r} is not a release number such as 0.2.0")
    if o.index is None and o.wheel is None:
        raise OnboardError("name where cloudlet comes from: --wheel PATH or --index URL")
    if o.index is not None and not _URL.fullmatch(o.index):
        raise OnboardError(f"--index {o.index!r} is not an http(s) URL")
    endpoints = o.etcd.split(",")
    bad = [e for e in endpoints if not _ENDPOINT.fullmatch(e)]
    if not o.etcd or bad:
        raise OnboardError(f"--etcd {o.etcd!r}: endpoints are HOST:PORT[,HOST:PORT...]")
    tls = (("--tls-ca", o.tls_ca), ("--tls-cert", o.tls_cert), ("--tls-key", o.tls_key))
    for flag, path in tls:
        if path is not None and not _PATH.fullmatch(path):
            raise OnboardError(f"{flag} {path!r}: an absolute path on the VM, no spaces or quotes")
    if (o.tls_cert is None) != (o.tls_key is None):
        raise OnboardError("--tls-cert and --tls-key go together (a client certificate, its key)")
    if o.wheel is not None:
        check_wheel(o.wheel.name, o.version)


def check_wheel(name: str, version: str) -> None:
    """A wheel's file name says its project and version: they must be the pin."""
    m = re.fullmatch(r"cloudlet-([^-]+)-[^-]+-[^-]+-[^-]+\.whl", name)
    if m is None:
        raise OnboardError(f"--wheel {name}: not a cloudlet wheel (cloudlet-VERSION-...whl)")
    if m.group(1) != version:
        raise OnboardError(f"--wheel {name} is cloudlet {m.group(1)}, not --version {version}")


INSTALL_SCRIPT = """\
#!/bin/sh
# cloudlet-install VERSION: install cloudlet==VERSION into /opt/cloudlet/VERSION and make it
# the current one. The running daemon keeps its files; restart it to run the new version:
#   cloudlet-install 0.2.0 && systemctl restart cloudlet-reconcile
# Written by cloudlet export onboard; where pip looks is in /etc/cloudlet/install.env.
set -eu
version="${1:?usage: cloudlet-install VERSION}"
. /etc/cloudlet/install.env
venv="/opt/cloudlet/$version"
if ! "$venv/bin/cloudlet" --version 2>/dev/null | grep -qx "cloudlet $version"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  set -- "cloudlet==$version"
  if [ -n "${CLOUDLET_INDEX_URL:-}" ]; then set -- --index-url "$CLOUDLET_INDEX_URL" "$@"; fi
  if [ -n "${CLOUDLET_WHEELS:-}" ]; then set -- --find-links "$CLOUDLET_WHEELS" "$@"; fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$@"
fi
"$venv/bin/cloudlet" --version | grep -qx "cloudlet $version"
ln -sfn "$venv" /opt/cloudlet/current.new
mv -Tf /opt/cloudlet/current.new /opt/cloudlet/current
ln -sfn /opt/cloudlet/current/bin/cloudlet /usr/local/bin/cloudlet
echo "cloudlet-install: cloudlet $version is current"
"""


def _env_lines(pairs: list[tuple[str, str]]) -> str:
    return "".join(f"{k}={v}\n" for k, v in pairs)


def _tls_dropin(o: Onboarding) -> str | None:
    """LoadCredential copies root-only files for the dynamic user; ``%d`` is
    where they land. Environment= here, not in reconcile.env: the paths are
    systemd's to fill in."""
    named = [
        ("CLOUDLET_ETCD_CACERT", "etcd-ca.pem", o.tls_ca),
        ("CLOUDLET_ETCD_CERT", "etcd-cert.pem", o.tls_cert),
        ("CLOUDLET_ETCD_KEY", "etcd-key.pem", o.tls_key),
    ]
    lines = []
    for var, cred, path in named:
        if path is not None:
            lines += [f"LoadCredential={cred}:{path}", f"Environment={var}=%d/{cred}"]
    if not lines:
        return None
    head = (
        "# etcd TLS by reference: the operator provisions these files (root-only);\n"
        "# systemd copies them for the daemon's dynamic user at each start.\n"
        "[Service]\n"
    )
    return head + "\n".join(lines) + "\n"


def _file(path: str, content: str, mode: str) -> dict[str, str]:
    return {"path": path, "owner": "root:root", "permissions": mode, "content": content}


def _files(o: Onboarding, unit: str) -> list[dict[str, str]]:
    install_env = []
    if o.index is not None:
        install_env.append(("CLOUDLET_INDEX_URL", o.index))
    if o.wheel is not None:
        install_env.append(("CLOUDLET_WHEELS", WHEELS))
    files = [
        _file(ENV_PATH, _env_lines([("CLOUDLET_ETCD", o.etcd)]), "0640"),
        _file(INSTALL_ENV, _env_lines(install_env), "0644"),
        _file(INSTALLER, INSTALL_SCRIPT, "0755"),
        _file(UNIT_PATH, unit, "0644"),
    ]
    dropin = _tls_dropin(o)
    if dropin is not None:
        files.append(_file(TLS_DROPIN, dropin, "0644"))
    if o.wheel is not None:
        wheel = _file(f"{WHEELS}/{o.wheel.name}", base64.b64encode(o.wheel.data).decode(), "0644")
        files.append({**wheel, "encoding": "b64"})
    return files


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as ``|`` blocks: operators read the files as they land."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def user_data(o: Onboarding, unit: str) -> str:
    """The ``#cloud-config`` document for ``o``, the unit text ``unit`` written verbatim."""
    check(o)
    config = {
        "package_update": True,
        "packages": ["python3-venv"],
        "write_files": _files(o, unit),
        "runcmd": [
            [INSTALLER, o.version],
            ["systemctl", "daemon-reload"],
            ["systemctl", "enable", "--now", UNIT_NAME],
        ],
    }
    header = (
        "#cloud-config\n"
        f"# A cloudlet {o.version} platform VM, rendered by cloudlet export onboard.\n"
        "# No secrets in here: TLS files are named by path; provision them before first boot.\n"
    )
    body = yaml.dump(config, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000)
    return header + body


def fits_nova(text: str) -> bool:
    return len(base64.b64encode(text.encode())) <= NOVA_USER_DATA_MAX
