"""How the OpenStack provider connects: the standard configuration, nothing of ours.

The spec names a ``clouds.yaml`` entry (``platform.cloud``); without one,
openstacksdk's own rules apply (``OS_CLOUD``, or the ``OS_*`` variables). So
credentials live where every OpenStack tool reads them, never in the spec,
the store or a plan. The SDK's and keystoneauth's debug logs are held at
WARNING even under ``--verbose``: they print request bodies.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import attrs
import openstack
import yaml
from openstack import exceptions as sdk
from openstack.config import loader

from cloudlet.errors import ProviderError
from cloudlet.model.spec import Gateway, Platform
from cloudlet.providers.openstack.faults import to_provider_error
from cloudlet.providers.openstack.gateway import auth_url, endpoint_overrides

#: Seconds a server may take to become ACTIVE (or finish a resize).
BUILD_TIMEOUT = 600.0


@attrs.frozen
class OpenstackConfig:
    cloud: str | None
    external_network: str | None
    build_timeout: float = BUILD_TIMEOUT
    #: Every API call through this gateway (platform.gateway), or straight to the cloud.
    gateway: Gateway | None = None


def load_config(platform: Platform) -> OpenstackConfig:
    return OpenstackConfig(
        cloud=platform.cloud, external_network=platform.external_network, gateway=platform.gateway
    )


def gateway_options(gateway: Gateway | None) -> dict[str, Any]:
    """What sends every call through the gateway: keystone's ``auth_url`` at the gateway
    (merged into the cloud's ``auth``, the credentials stay in clouds.yaml), and an
    endpoint override per service, because the catalogue keystone returns lists the
    cloud's internal URLs, which the engine's network cannot reach. A service the gateway
    does not forward keeps its catalogue URL, and fails: nothing bypasses the gateway."""
    if gateway is None:
        return {}
    return {"auth": {"auth_url": auth_url(gateway)}, **endpoint_overrides(gateway)}


def quiet_sdk_logs() -> None:
    for name in ("openstack", "keystoneauth", "stevedore", "urllib3"):
        logger = logging.getLogger(name)
        if logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)


def sdk_config_files() -> list[str]:
    """The files openstacksdk reads: the first that exists of each list
    (clouds, clouds-public, secure), ``OS_CLIENT_*_FILE`` first."""
    lists = [
        (os.environ.get("OS_CLIENT_CONFIG_FILE"), loader.CONFIG_FILES),
        (None, loader.VENDOR_FILES),
        (os.environ.get("OS_CLIENT_SECURE_FILE"), loader.SECURE_FILES),
    ]
    found = []
    for override, paths in lists:
        first = next(
            (p for p in ([override] if override else []) + paths if os.path.exists(p)), None
        )
        if first is not None:
            found.append(first)
    return found


def broken_config_file() -> None:
    """The SDK skips a clouds.yaml it cannot parse and then reports the cloud
    "not found"; say which file and line is broken instead."""
    for path in sdk_config_files():
        try:
            with open(path, encoding="utf-8") as fh:
                yaml.safe_load(fh)
        except OSError:
            continue
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
            problem = getattr(err, "problem", None) or type(err).__name__
            raise ProviderError(
                f"{where}: not valid YAML ({problem}); openstacksdk skips this file",
                transient=False,
            ) from None


def config_hint(cloud: str | None) -> str:
    """What to fix, for the way the platform block asks for credentials."""
    if cloud == "envvars":
        return "platform.cloud is envvars: set OS_AUTH_URL and the other OS_* variables"
    if cloud:
        files = sdk_config_files()
        read = ", ".join(files) if files else "no clouds.yaml found (set OS_CLIENT_CONFIG_FILE)"
        return f"platform.cloud names an entry of clouds.yaml; read: {read}"
    return "name a clouds.yaml entry in platform.cloud, or set OS_CLOUD or the OS_* variables"


def connect(config: OpenstackConfig) -> Any:
    """An openstacksdk Connection (typed Any: SDK types stay in this package)."""
    quiet_sdk_logs()
    broken_config_file()  # before the SDK warns in three lines and reads on
    what = f"connect to cloud {config.cloud!r}" if config.cloud else "connect to OpenStack"
    try:
        kwargs: dict[str, Any] = {"api_timeout": 60}
        if config.cloud:
            kwargs["cloud"] = config.cloud
        kwargs.update(gateway_options(config.gateway))
        return openstack.connect(**kwargs)
    except sdk.ConfigException as err:
        raise ProviderError(
            f"{what}: {err} ({config_hint(config.cloud)})", transient=False
        ) from err
    except Exception as err:
        raise to_provider_error(what, err) from err
