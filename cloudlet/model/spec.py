"""The desired-state document, version 1, as typed attrs classes.

Field names are snake_case here and camelCase in YAML; the loader renames.
Defaults live here so that an omitted field and an explicit default expand
to the same resources.
"""

from __future__ import annotations

from typing import Literal

import attrs

API_VERSION = "cloudlet/v1"
KIND = "Cloudlet"

PlatformType = Literal["fake", "openstack", "vsphere", "local"]
DataPath = Literal["no-router", "router", "floating-ip"]
LbType = Literal["shared", "dedicated"]
Redundancy = Literal["none", "vip"]
Direction = Literal["ingress", "egress"]
Protocol = Literal["tcp", "udp", "icmp", "any"]
ExposeProtocol = Literal["tcp", "udp"]
DriftPolicy = Literal["heal", "report"]


@attrs.frozen
class Metadata:
    name: str
    labels: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen
class Platform:
    """Where the cloudlet runs; keys beyond ``type`` belong to one provider.

    Credentials never live here: providers read them from their own standard
    configuration (clouds.yaml, environment), so specs can be stored safely.
    """

    type: PlatformType = "fake"
    # fake
    latency_ms: int = 0
    jitter_ms: int = 0
    failure_rate: float = 0.0
    seed: int = 0
    # openstack
    cloud: str | None = None
    external_network: str | None = None
    # vsphere
    datacenter: str | None = None
    cluster: str | None = None
    datastore: str | None = None
    network: str | None = None
    template: str | None = None
    # local: the external network's range; None picks a free /24 of 198.18.0.0/15
    external_cidr: str | None = None


@attrs.frozen
class Defaults:
    image: str = "ubuntu-22.04"
    flavor: str = "m1.medium"


@attrs.frozen
class Network:
    name: str
    cidr: str
    drift_policy: DriftPolicy | None = None


@attrs.frozen
class Rule:
    direction: Direction = "ingress"
    protocol: Protocol = "tcp"
    ports: str | None = None  # "443" or "8000-8080"; None for all
    remote: str = "0.0.0.0/0"


@attrs.frozen
class SecurityGroup:
    name: str
    rules: list[Rule] = attrs.field(factory=list)
    drift_policy: DriftPolicy | None = None


@attrs.frozen
class LoadBalancer:
    name: str
    network: str
    type: LbType = "shared"
    redundancy: Redundancy = "none"
    security_groups: list[str] = attrs.field(factory=list)
    flavor: str | None = None
    image: str | None = None
    drift_policy: DriftPolicy | None = None


@attrs.frozen
class PortSpec:
    port: int
    protocol: ExposeProtocol = "tcp"


@attrs.frozen
class Expose:
    load_balancer: str
    ports: list[PortSpec] = attrs.field(factory=list)


@attrs.frozen
class Cluster:
    name: str
    network: str
    masters: int = 1
    workers: int = 0
    flavor: str | None = None
    image: str | None = None
    vip: bool = False
    security_groups: list[str] = attrs.field(factory=list)
    expose: Expose | None = None
    drift_policy: DriftPolicy | None = None


@attrs.frozen
class Vm:
    name: str
    network: str
    image: str | None = None
    flavor: str | None = None
    security_groups: list[str] = attrs.field(factory=list)
    expose: Expose | None = None
    drift_policy: DriftPolicy | None = None


@attrs.frozen
class CloudletSpec:
    platform: Platform = attrs.field(factory=Platform)
    data_path: DataPath = "no-router"
    defaults: Defaults = attrs.field(factory=Defaults)
    networks: list[Network] = attrs.field(factory=list)
    security_groups: list[SecurityGroup] = attrs.field(factory=list)
    load_balancers: list[LoadBalancer] = attrs.field(factory=list)
    clusters: list[Cluster] = attrs.field(factory=list)
    vms: list[Vm] = attrs.field(factory=list)
    # CIDR of the translated subnet LBs sit on in the floating-ip data path.
    lb_subnet: str = "192.168.255.0/24"
    #: The default for every object; each may set its own ``driftPolicy``.
    drift_policy: DriftPolicy = "heal"


@attrs.frozen
class Cloudlet:
    """One YAML document: the whole desired state of one edge site."""

    api_version: str
    kind: str
    metadata: Metadata
    spec: CloudletSpec

    @property
    def name(self) -> str:
        return self.metadata.name
