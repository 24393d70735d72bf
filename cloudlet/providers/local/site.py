"""One cloudlet on this host: its names, its records, its fabric and its addresses.

Names derive from the state directory and the cloudlet, so two cloudlets
(and two test runs) never share a namespace or link: the fabric namespace
``cl-<cloudlet>-<key>``, each VM's ``cl-<cloudlet>-<key>-<uid>``, the host's
one veth ``cl<key>h``. The fabric holds a bridge per network plus ``ext``,
the external network, which the host reaches through that veth and the
on-link route of the cloudlet's external range: nothing else on the host.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import shutil
from pathlib import Path

from cloudlet.errors import ProviderError
from cloudlet.model.kinds import EXTERNAL, ref
from cloudlet.model.resources import AttrValue
from cloudlet.providers.local import host
from cloudlet.providers.local.records import Record, Records

#: ``externalCidr`` unset: the lowest /24 of this range that no host route uses.
AUTO_RANGE = ipaddress.ip_network("198.18.0.0/15")
#: Daemons' runtime files (a UNIX socket path must stay under 108 bytes).
RUNTIME = Path("/run/cloudlet-local")
#: The kinds that take an address from a pool (a subnet's, or the external range).
ADDRESSED = ("port", "vip", "floating-ip", "router")
#: Kinds whose address is always from the external range: a floating IP, and
#: a router's external leg (``routers.py``).
ON_EXTERNAL = ("floating-ip", "router")


class Site:
    """The names and records of one cloudlet on this host."""

    def __init__(self, base: Path, owner: str) -> None:
        self.owner = owner
        self.key = hashlib.sha1(f"{base.resolve()}\0{owner}".encode()).hexdigest()[:6]
        self.dir = base / owner
        self.records = Records(self.dir / "objects")
        self.fabric = f"{host.PREFIX}{owner}-{self.key}"
        self.host_if = f"cl{self.key}h"

    def ns(self, uid: str) -> str:
        return f"{self.fabric}-{uid}"

    def run_dir(self, uid: str) -> Path:
        return self.dir / "run" / uid

    def lb_dir(self, lb_uid: str, member_uid: str) -> Path:
        """An LB VM's configs, pid files and sockets: short, for UNIX socket paths."""
        return RUNTIME / self.key / f"{lb_uid}.{member_uid}"

    @property
    def meta_path(self) -> Path:
        return self.dir / "site.json"

    def external_cidr(self) -> str | None:
        try:
            return str(json.loads(self.meta_path.read_text())["externalCidr"])
        except (OSError, ValueError, KeyError):
            return None

    # -- the fabric --------------------------------------------------------

    def ensure_fabric(self, wanted_cidr: str | None) -> None:
        host.ensure_namespace(self.fabric)
        if "ext" not in host.links(self.fabric):
            host.batch(self.fabric, ["link add ext type bridge"])
        host.batch(self.fabric, ["link set ext up"])
        cidr = self.external_cidr() or wanted_cidr or choose_range()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.meta_path.write_text(json.dumps({"externalCidr": cidr}))
        host.add_host_leg(self.host_if, self.fabric, "ext-h", "ext", cidr)

    def teardown_fabric(self) -> None:
        host.del_host_leg(self.host_if)
        host.delete_namespace(self.fabric)
        self.meta_path.unlink(missing_ok=True)
        shutil.rmtree(self.dir / "run", ignore_errors=True)
        shutil.rmtree(RUNTIME / self.key, ignore_errors=True)

    # -- addresses -----------------------------------------------------------

    def computed(self, record: Record) -> dict[str, AttrValue]:
        """What the platform decides for a new object: the address of a port,
        a VIP, a floating IP or a router's external leg."""
        if record.kind not in ADDRESSED:
            return {}
        pool, cidr = self.pool(record)
        taken = {
            str(r.attrs.get("address"))
            for r in self.records.all()
            if r.kind in ADDRESSED and pool_key(r) == pool
        }
        for addr in list(ipaddress.ip_network(cidr).hosts())[1:]:  # the first: gateway, host leg
            if str(addr) not in taken:
                return {"address": str(addr)}
        raise ProviderError(f"{record.id}: no address left in {cidr}", transient=False)

    def pool(self, record: Record) -> tuple[str, str]:
        """The pool an addressed record draws from, and its CIDR."""
        key = pool_key(record)
        if key == EXTERNAL:
            cidr = self.external_cidr()
            assert cidr is not None, "the fabric is made before any port"
            return key, cidr
        subnet = self.records.by_id(key)
        if subnet is None:
            raise ProviderError(f"{record.id}: its subnet {key} does not exist", transient=True)
        return key, str(subnet.attrs["cidr"])

    def prefix(self, record: Record) -> int:
        return ipaddress.ip_network(self.pool(record)[1]).prefixlen

    def bridge(self, port: Record) -> str:
        """The fabric bridge a port's veth joins."""
        if port.attrs.get("network") == EXTERNAL:
            return "ext"
        subnet = self.records.by_id(str(ref(port.attrs, "subnet")))
        network = self.records.by_id(str(ref(subnet.attrs, "network"))) if subnet else None
        if network is None:
            raise ProviderError(f"{port.id}: its network does not exist", transient=True)
        return f"b{network.uid}"


def pool_key(record: Record) -> str:
    if record.kind in ON_EXTERNAL or record.attrs.get("network") == EXTERNAL:
        return EXTERNAL
    return str(ref(record.attrs, "subnet"))


def choose_range() -> str:
    used = {r for r in host.routes() if r and r != "default"}
    for net in AUTO_RANGE.subnets(new_prefix=24):
        if not any(ipaddress.ip_network(u, strict=False).overlaps(net) for u in used):
            return str(net)
    raise ProviderError("no free /24 left in 198.18.0.0/15 for an external range", transient=False)
