"""Where the vSphere provider learns its endpoint, credentials and site tables.

Credentials come from the environment (``VSPHERE_HOST``, ``VSPHERE_USER``,
``VSPHERE_PASSWORD``, ``VSPHERE_INSECURE``, ``VSPHERE_CA_FILE``) or from a YAML file
(``VSPHERE_CONFIG``, default ``~/.config/cloudlet/vsphere.yaml``), the
environment winning. They never come from the spec, so a stored desired
state holds no secret, and the password is kept out of every ``repr`` so a
log line or a traceback cannot print it.

With a ``platform.gateway`` the spec's ``sdk`` endpoint is vCenter's address (it names what
the gateway forwards to, so the two cannot disagree): ``VSPHERE_HOST`` may then be left unset,
and if set must name the same URL. Connections go to the gateway; TLS still checks vCenter.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import yaml

from cloudlet.errors import ProviderError
from cloudlet.model import gateway as gw
from cloudlet.model.spec import Gateway, Platform

DEFAULT_CONFIG = Path("~/.config/cloudlet/vsphere.yaml")
#: The documentation range: safe as a default that never routes anywhere.
DEFAULT_EXTERNAL_CIDR = "198.18.0.0/15"
#: name -> (vCPUs, memory in MiB); the config file may add or override entries.
FLAVORS: Mapping[str, tuple[int, int]] = {
    "m1.tiny": (1, 1024),
    "m1.small": (1, 2048),
    "m1.medium": (2, 4096),
    "m1.large": (4, 8192),
    "m1.xlarge": (8, 16384),
}
_TRUE = {"1", "true", "yes", "on"}


@attrs.frozen
class Endpoint:
    """How to reach vCenter; ``password`` never shows in a repr."""

    host: str
    port: int
    protocol: str
    path: str
    user: str
    password: str = attrs.field(repr=False)
    insecure: bool = False
    ca_file: str | None = None
    #: The gateway's address and port (platform.gateway): every connection goes there, while
    #: TLS still verifies vCenter's certificate for ``host``; None: straight to ``host``.
    via: tuple[str, int] | None = None


@attrs.frozen
class SiteConfig:
    """The spec's platform block plus the site tables from the config file."""

    datacenter: str
    cluster: str
    datastore: str
    template: str
    network: str | None
    dv_switch: str | None = None
    external_cidr: str = DEFAULT_EXTERNAL_CIDR
    flavors: Mapping[str, tuple[int, int]] = attrs.field(factory=lambda: dict(FLAVORS))
    images: Mapping[str, str] = attrs.field(factory=dict)
    task_timeout: float = 600.0


@attrs.frozen
class VsphereConfig:
    endpoint: Endpoint
    site: SiteConfig


def _missing(what: str) -> ProviderError:
    return ProviderError(f"vsphere: {what}", transient=False)


def parse_host(value: str) -> tuple[str, int, str, str]:
    """``vc.example``, ``vc:8443`` or ``http://127.0.0.1:8989/sdk`` -> host, port, scheme, path."""
    text = value if "://" in value else f"https://{value}"
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _missing("VSPHERE_HOST must be a host name, host:port or an http(s) URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as err:
        raise _missing("VSPHERE_HOST has an invalid port") from err
    return parts.hostname, port, parts.scheme, parts.path or "/sdk"


def _read_file(env: Mapping[str, str]) -> dict[str, Any]:
    path = Path(env.get("VSPHERE_CONFIG") or DEFAULT_CONFIG).expanduser()
    if not path.is_file():
        if env.get("VSPHERE_CONFIG"):
            raise _missing(f"config file {path} does not exist")
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise _missing(f"cannot read config file {path}: {type(err).__name__}") from err
    if not isinstance(data, dict):
        raise _missing(f"config file {path} must hold a mapping")
    _check_types(path, data)
    return data


#: The config file's fields and the YAML types each may take.
_FIELD_TYPES: Mapping[str, tuple[type, ...]] = {
    "host": (str,),
    "user": (str,),
    "password": (str, int),
    "insecure": (bool, str),
    "caFile": (str,),
    "dvSwitch": (str,),
    "externalCidr": (str,),
    "flavors": (dict,),
    "images": (dict,),
    "taskTimeout": (int, float),
}


_TYPE_NAMES = {
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "true or false",
    dict: "a mapping",
}


def _yaml_type(value: object) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    names: dict[type, str] = {str: "a string", list: "a list", dict: "a mapping"}
    return names.get(type(value), type(value).__name__)


def _check_types(path: Path, data: Mapping[str, Any]) -> None:
    """A field of the wrong YAML type is named with its file, not met later as
    an ``AttributeError`` deep in the provider."""
    for field, types in _FIELD_TYPES.items():
        value = data.get(field)
        if value is None:
            continue
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            wanted = " or ".join(dict.fromkeys(_TYPE_NAMES[t] for t in types))
            # The type, never the value: the field may be the password.
            raise _missing(f"config file {path}: {field} must be {wanted}, not {_yaml_type(value)}")
    if isinstance(data.get("taskTimeout"), int | float) and not data["taskTimeout"] > 0:
        raise _missing(f"config file {path}: taskTimeout must be a positive number of seconds")


def _flavors(raw: Any) -> dict[str, tuple[int, int]]:
    table = dict(FLAVORS)
    for name, entry in (raw or {}).items():
        try:
            table[str(name)] = (int(entry["cpus"]), int(entry["memoryMb"]))
        except (TypeError, KeyError, ValueError) as err:
            raise _missing(f"flavor {name!r} needs integer cpus and memoryMb") from err
    return table


def _through(gateway: Gateway, host: str) -> tuple[tuple[str, int, str, str], tuple[str, int]]:
    """vCenter as the gateway's ``sdk`` endpoint names it, and where the gateway listens for it;
    a ``VSPHERE_HOST`` naming another vCenter is refused (which one would be meant?)."""
    (sdk,) = [e for e in gw.endpoints(gateway) if e.service == "sdk"]  # validation saw to it
    vcenter = (sdk.host, sdk.port, sdk.scheme, sdk.path or "/sdk")
    if host and parse_host(host) != vcenter:
        name, port, scheme, path = parse_host(host)
        raise _missing(
            f"the vCenter host (VSPHERE_HOST or the config file's host) is "
            f"{scheme}://{gw.host_in_url(name)}:{port}{path} but the spec's "
            f"platform.gateway.endpoints.sdk is {gateway.endpoints['sdk']}: with a gateway "
            "vCenter's address is the sdk endpoint (leave the host unset, or make them agree)"
        )
    return vcenter, (gateway.address, gw.listen_port(gateway, sdk))


def _endpoint(env: Mapping[str, str], data: Mapping[str, Any], gateway: Gateway | None) -> Endpoint:
    def pick(env_key: str, file_key: str) -> str:
        return str(env.get(env_key) or data.get(file_key) or "")

    host, user, password = (
        pick("VSPHERE_HOST", "host"),
        pick("VSPHERE_USER", "user"),
        pick("VSPHERE_PASSWORD", "password"),
    )
    given = (("host", host or gateway), ("user", user), ("password", password))
    absent = [n for n, v in given if not v]
    if absent:
        raise _missing(
            f"no vCenter {', '.join(absent)}: set VSPHERE_HOST, VSPHERE_USER and "
            "VSPHERE_PASSWORD (or host/user/password in the VSPHERE_CONFIG file)"
        )
    via = None
    if gateway is None:
        name, port, scheme, path = parse_host(host)
    else:
        (name, port, scheme, path), via = _through(gateway, host)
    insecure = pick("VSPHERE_INSECURE", "insecure").strip().lower() in _TRUE
    ca_file = pick("VSPHERE_CA_FILE", "caFile") or None
    return Endpoint(name, port, scheme, path, user, password, insecure, ca_file, via)


def load_config(platform: Platform, env: Mapping[str, str] | None = None) -> VsphereConfig:
    """Everything the provider needs; a missing piece is a permanent error."""
    env = os.environ if env is None else env
    data = _read_file(env)
    required = {
        "datacenter": platform.datacenter,
        "cluster": platform.cluster,
        "datastore": platform.datastore,
        "template": platform.template,
    }
    absent = [k for k, v in required.items() if not v]
    if absent:
        raise _missing(f"the platform block needs {', '.join(absent)}")
    cidr = str(env.get("VSPHERE_EXTERNAL_CIDR") or data.get("externalCidr") or "")
    cidr = cidr or DEFAULT_EXTERNAL_CIDR
    try:
        ipaddress.ip_network(cidr)
    except ValueError as err:
        raise _missing(f"externalCidr {cidr!r} is not a network") from err
    site = SiteConfig(
        datacenter=str(platform.datacenter),
        cluster=str(platform.cluster),
        datastore=str(platform.datastore),
        template=str(platform.template),
        network=platform.network,
        dv_switch=str(env.get("VSPHERE_DVSWITCH") or data.get("dvSwitch") or "") or None,
        external_cidr=cidr,
        flavors=_flavors(data.get("flavors")),
        images={str(k): str(v) for k, v in (data.get("images") or {}).items()},
        task_timeout=float(data.get("taskTimeout") or 600.0),
    )
    return VsphereConfig(_endpoint(env, data, platform.gateway), site)
