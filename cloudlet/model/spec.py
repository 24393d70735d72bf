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
    #: The cloudlet's name, ``[a-z][a-z0-9-]{0,39}``; unique in a store.
    name: str
    #: Free-form labels, kept with the desired state.
    labels: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen
class Gateway:
    """The gateway between an isolated orchestrator network and the engine's.

    Every API call goes through it: the gateway listens on ``address``, one
    port per endpoint, and forwards to the orchestrator's own (internal) URL;
    ``cloudlet export gateway`` renders its nginx configuration.
    """

    #: The gateway's address as the engine's network reaches it (an IP address or a host name).
    address: str
    #: The orchestrator's endpoints by service type, each its own (internal) URL. openstack:
    #: `identity` (required), `compute`, `network`, `image`, ..., as the service catalogue
    #: lists them; vsphere: `sdk` (required), vCenter's `https://HOST/sdk`.
    endpoints: dict[str, str]
    #: The gateway's listen port by service type; unset: the port of the endpoint's URL.
    ports: dict[str, int] = attrs.field(factory=dict)
    #: The engine's networks (CIDRs) the gateway answers; empty: any that reaches its address.
    clients: list[str] = attrs.field(factory=list)


@attrs.frozen
class Platform:
    """Where the cloudlet runs; keys beyond ``type`` belong to one provider.

    Credentials never live here: providers read them from their own standard
    configuration (clouds.yaml, environment), so specs can be stored safely.
    """

    #: The orchestrator: ``fake`` (simulated), ``openstack``, ``vsphere`` or ``local``.
    type: PlatformType = "fake"
    # fake
    #: fake: milliseconds each simulated call takes.
    latency_ms: int = 0
    #: fake: each call takes up to this many milliseconds more or less, at random.
    jitter_ms: int = 0
    #: fake: the share of calls, in [0, 1), that fail (before or after the cloud acts).
    failure_rate: float = 0.0
    #: fake: the random seed of jitter and failures.
    seed: int = 0
    # openstack
    #: openstack: the ``clouds.yaml`` entry to use (credentials stay there); required.
    cloud: str | None = None
    #: openstack: the external network (LB legs, router gateway, floating IPs); required.
    external_network: str | None = None
    #: openstack, vsphere: the gateway every API call goes through; unset: straight to the cloud.
    gateway: Gateway | None = None
    # vsphere
    #: vsphere: the datacenter's inventory name; required.
    datacenter: str | None = None
    #: vsphere: the cluster whose root resource pool receives the VMs; required.
    cluster: str | None = None
    #: vsphere: the datastore clones are placed on; required.
    datastore: str | None = None
    #: vsphere: the external network (a standard or distributed port group); required.
    network: str | None = None
    #: vsphere: the VM or template cloned when an image has no template of its own; required.
    template: str | None = None
    #: local: the external network's range; unset picks a free /24 of 198.18.0.0/15.
    external_cidr: str | None = None


@attrs.frozen
class Defaults:
    #: The image of every VM, LB VM and cluster node that names none.
    image: str = "ubuntu-22.04"
    #: The flavor (size) of every VM, LB VM and cluster node that names none.
    flavor: str = "m1.medium"


@attrs.frozen
class Network:
    #: The network's name (its subnet has the same name).
    name: str
    #: The subnet's range, IPv4 or IPv6 (``10.10.0.0/24``).
    cidr: str
    #: ``heal`` or ``report`` drift on this network; unset: the cloudlet's policy.
    drift_policy: DriftPolicy | None = None


@attrs.frozen
class Rule:
    #: ``ingress`` (to the member) or ``egress`` (from it).
    direction: Direction = "ingress"
    #: ``tcp``, ``udp``, ``icmp`` or ``any``.
    protocol: Protocol = "tcp"
    #: A port (``"443"``) or a range (``"8000-8080"``), quoted; unset: all ports.
    ports: str | None = None
    #: The peers' CIDR.
    remote: str = "0.0.0.0/0"


@attrs.frozen
class SecurityGroup:
    #: The group's name, as the objects' ``securityGroups`` list it.
    name: str
    #: Exactly the rules the group holds (no egress rule listed: all egress allowed).
    rules: list[Rule] = attrs.field(factory=list)
    #: ``heal`` or ``report`` drift on this group; unset: the cloudlet's policy.
    drift_policy: DriftPolicy | None = None


@attrs.frozen
class LoadBalancer:
    #: The LB's name, as ``expose.loadBalancer`` names it.
    name: str
    #: The internal network its back-ends are on.
    network: str
    #: ``shared`` (one public IP, colliding ports remapped) or ``dedicated``
    #: (its own public IP, ports unchanged).
    type: LbType = "shared"
    #: ``none`` (one LB VM) or ``vip`` (two LB VMs sharing a virtual IP).
    redundancy: Redundancy = "none"
    #: The security groups of the LB's ports.
    security_groups: list[str] = attrs.field(factory=list)
    #: The LB VMs' flavor; unset: ``defaults.flavor``.
    flavor: str | None = None
    #: The LB VMs' image; unset: ``defaults.image``.
    image: str | None = None
    #: ``heal`` or ``report`` drift on this LB; unset: the cloudlet's policy.
    drift_policy: DriftPolicy | None = None


@attrs.frozen
class PortSpec:
    #: The back-end's port (1-65535); the public one is the same unless remapped.
    port: int
    #: ``tcp`` or ``udp``.
    protocol: ExposeProtocol = "tcp"


@attrs.frozen
class Expose:
    #: The load balancer that forwards to this VM or cluster.
    load_balancer: str
    #: The ports forwarded.
    ports: list[PortSpec] = attrs.field(factory=list)


@attrs.frozen
class Cluster:
    #: The Kubernetes cluster's name.
    name: str
    #: The network its nodes are on.
    network: str
    #: How many control-plane nodes.
    masters: int = 1
    #: How many worker nodes.
    workers: int = 0
    #: The nodes' flavor; unset: ``defaults.flavor``.
    flavor: str | None = None
    #: The nodes' image; unset: ``defaults.image``.
    image: str | None = None
    #: A virtual IP shared by all nodes (MetalLB style).
    vip: bool = False
    #: The security groups of the nodes' ports.
    security_groups: list[str] = attrs.field(factory=list)
    #: Ports of the cluster forwarded by a load balancer.
    expose: Expose | None = None
    #: ``heal`` or ``report`` drift on this cluster; unset: the cloudlet's policy.
    drift_policy: DriftPolicy | None = None


@attrs.frozen
class Vm:
    #: The VM's name.
    name: str
    #: The network its port is on.
    network: str
    #: Its image; unset: ``defaults.image``.
    image: str | None = None
    #: Its flavor; unset: ``defaults.flavor``.
    flavor: str | None = None
    #: The security groups of its port.
    security_groups: list[str] = attrs.field(factory=list)
    #: Ports of the VM forwarded by a load balancer.
    expose: Expose | None = None
    #: ``heal`` or ``report`` drift on this VM; unset: the cloudlet's policy.
    drift_policy: DriftPolicy | None = None


@attrs.frozen
class CloudletSpec:
    #: Where the cloudlet runs.
    platform: Platform = attrs.field(factory=Platform)
    #: How public traffic reaches the LBs: ``no-router`` (each LB VM has an
    #: external leg), ``router`` (a router joins external and internal networks)
    #: or ``floating-ip`` (LBs on a translated subnet, a floating IP each).
    data_path: DataPath = "no-router"
    #: Image and flavor for what names none.
    defaults: Defaults = attrs.field(factory=Defaults)
    #: The internal networks.
    networks: list[Network] = attrs.field(factory=list)
    #: The security groups, referred to by name.
    security_groups: list[SecurityGroup] = attrs.field(factory=list)
    #: The load balancers (the root LB is a ``shared`` one).
    load_balancers: list[LoadBalancer] = attrs.field(factory=list)
    #: The Kubernetes clusters.
    clusters: list[Cluster] = attrs.field(factory=list)
    #: The VMs.
    vms: list[Vm] = attrs.field(factory=list)
    #: CIDR of the translated subnet LBs sit on in the floating-ip data path.
    lb_subnet: str = "192.168.255.0/24"
    #: The default for every object; each may set its own ``driftPolicy``.
    drift_policy: DriftPolicy = "heal"


@attrs.frozen
class Cloudlet:
    """One YAML document: the whole desired state of one edge site."""

    #: Always ``cloudlet/v1``.
    api_version: str
    #: Always ``Cloudlet``.
    kind: str
    #: The cloudlet's name and labels.
    metadata: Metadata
    #: The desired state.
    spec: CloudletSpec

    @property
    def name(self) -> str:
        return self.metadata.name
