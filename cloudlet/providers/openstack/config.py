"""How the OpenStack provider connects: the standard configuration, nothing of ours.

The spec names a ``clouds.yaml`` entry (``platform.cloud``); without one,
openstacksdk's own rules apply (``OS_CLOUD``, or the ``OS_*`` variables). So
credentials live where every OpenStack tool reads them, never in the spec,
the store or a plan. The SDK's and keystoneauth's debug logs are held at
WARNING even under ``--verbose``: they print request bodies.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs
import openstack
from openstack import exceptions as sdk

from cloudlet.errors import ProviderError
from cloudlet.model.spec import Platform
from cloudlet.providers.openstack.faults import to_provider_error

#: Seconds a server may take to become ACTIVE (or finish a resize).
BUILD_TIMEOUT = 600.0


@attrs.frozen
class OpenstackConfig:
    cloud: str | None
    external_network: str | None
    build_timeout: float = BUILD_TIMEOUT


def load_config(platform: Platform) -> OpenstackConfig:
    return OpenstackConfig(cloud=platform.cloud, external_network=platform.external_network)


def quiet_sdk_logs() -> None:
    for name in ("openstack", "keystoneauth", "stevedore", "urllib3"):
        logger = logging.getLogger(name)
        if logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)


def connect(config: OpenstackConfig) -> Any:
    """An openstacksdk Connection (typed Any: SDK types stay in this package)."""
    quiet_sdk_logs()
    what = f"connect to cloud {config.cloud!r}" if config.cloud else "connect to OpenStack"
    try:
        kwargs: dict[str, Any] = {"api_timeout": 60}
        if config.cloud:
            kwargs["cloud"] = config.cloud
        return openstack.connect(**kwargs)
    except sdk.ConfigException as err:
        raise ProviderError(
            f"{what}: {err} (name a clouds.yaml entry in platform.cloud, "
            "or set OS_CLOUD or the OS_* variables)",
            transient=False,
        ) from err
    except Exception as err:
        raise to_provider_error(what, err) from err
