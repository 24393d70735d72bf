"""The ``local`` platform: a whole cloudlet in network namespaces on this host.

Each cloudlet gets a fabric namespace holding one Linux bridge per network
and one for the external network, which the host reaches through one veth
and the on-link route of the cloudlet's external range (nothing else on the
host changes). A VM is a namespace with a veth per port on its network's
bridge, running a back-end (``backend.py``) that answers on every port: an
nftables redirect in the VM's namespace sends any TCP or UDP port to it. A
load balancer's VMs run haproxy (TCP) and nginx stream (UDP) instead,
configured from its listener records. Subnets, ports, VIPs and security
groups are records with addresses from their CIDR; what they mean is built
into the namespaces of the VMs that use them.

Observe reads the records (``records.py``) and checks what they describe
still exists (namespace, processes): an object whose namespace was deleted
or whose daemon died is reported with the cloud-computed ``broken``
attribute, which the planner answers with a replacement.

This version builds the ``no-router`` data path; a ``router`` or a
``floating-ip`` is refused (permanent), as is a VIP's keepalived: issue 10
goes on.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import shutil
import sys
import threading
import time
import uuid
from pathlib import Path

from cloudlet.errors import ProviderError
from cloudlet.model.kinds import EXTERNAL, immutable_refusal, ref, refs
from cloudlet.model.resources import AttrValue, Observed, Resource
from cloudlet.providers.local import host
from cloudlet.providers.local.lbconf import lb_config, lb_daemons
from cloudlet.providers.local.records import Record, Records

#: Every TCP and UDP port of a VM is redirected to its back-end's two ports.
BACKEND_TCP, BACKEND_UDP = 7000, 7001
#: ``auto``: the lowest /24 of this range that no host route uses yet.
AUTO_RANGE = ipaddress.ip_network("198.18.0.0/15")
UNSUPPORTED = {"router", "floating-ip"}
#: Where the ``cloudlet`` package is, for back-ends started without site-packages.
PACKAGE_ROOT = Path(__file__).resolve().parents[3]
#: Daemons' runtime files (a UNIX socket path must stay under 108 bytes).
RUNTIME = Path("/run/cloudlet-local")


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


class LocalProvider:
    def __init__(self, state_dir: Path | str, *, external_cidr: str | None = None) -> None:
        self.base = Path(state_dir) / "local"
        self.wanted_cidr = external_cidr
        self._lock = threading.RLock()

    # -- the Provider seam -------------------------------------------------

    def observe(self, owner: str) -> list[Observed]:
        site = Site(self.base, owner)
        with self._lock:
            present = host.namespaces()
            return [r.observed(self._health(site, r, present)) for r in site.records.all()]

    def create(self, owner: str, resource: Resource) -> Observed:
        if resource.kind in UNSUPPORTED:
            raise ProviderError(
                f"{resource.id}: the local platform builds no {resource.kind} yet "
                "(data path no-router only)",
                transient=False,
            )
        site = Site(self.base, owner)
        with self._lock:
            self._ensure_fabric(site)
            try:
                record = site.records.by_id(resource.id) or self._new_record(site, resource)
            except ProviderError:
                if not site.records.all():
                    self._teardown_fabric(site)  # nothing else here: leave the host as it was
                raise
            self._build(site, record)
            return self._observed(site, record)

    def _observed(self, site: Site, record: Record) -> Observed:
        return record.observed(self._health(site, record, host.namespaces()))

    def _new_record(self, site: Site, resource: Resource) -> Record:
        """The record first: a create cut off after this is adopted."""
        record = Record(
            uuid.uuid4().hex[:8],
            resource.id,
            resource.kind,
            dict(resource.attrs),
            list(resource.deps),
        )
        record.attrs.update(self._computed(site, record))
        site.records.put(record)
        return record

    def update(self, owner: str, resource: Resource, current: Observed) -> Observed:
        site = Site(self.base, owner)
        with self._lock:
            record = site.records.get(current.uid)
            if record is None:
                raise ProviderError(f"{resource.id}: no object {current.uid}", transient=False)
            refusal = immutable_refusal(resource, record.attrs)
            if refusal is not None:
                raise ProviderError(refusal, transient=False)
            record.attrs.update(resource.attrs)
            record.deps = list(resource.deps)
            site.records.put(record)
            self._build(site, record)
            return self._observed(site, record)

    def replacement_reason(self, resource: Resource, current: Observed) -> str | None:
        return None

    def delete(self, owner: str, current: Observed) -> None:
        site = Site(self.base, owner)
        with self._lock:
            record = site.records.get(current.uid)
            if record is None:
                return
            self._unbuild(site, record)
            site.records.remove(record.uid)
            if not site.records.all():
                self._teardown_fabric(site)

    def close(self) -> None:
        return None

    # -- the fabric ----------------------------------------------------------

    def _ensure_fabric(self, site: Site) -> None:
        host.ensure_namespace(site.fabric)
        if "ext" not in host.links(site.fabric):
            host.batch(site.fabric, ["link add ext type bridge"])
        host.batch(site.fabric, ["link set ext up"])
        cidr = site.external_cidr() or self._choose_range()
        site.dir.mkdir(parents=True, exist_ok=True)
        site.meta_path.write_text(json.dumps({"externalCidr": cidr}))
        host.add_host_leg(site.host_if, site.fabric, "ext-h", "ext", cidr)

    def _choose_range(self) -> str:
        if self.wanted_cidr:
            return self.wanted_cidr
        used = {r for r in host.routes() if r and r != "default"}
        for net in AUTO_RANGE.subnets(new_prefix=24):
            if not any(ipaddress.ip_network(u, strict=False).overlaps(net) for u in used):
                return str(net)
        raise ProviderError(
            "no free /24 left in 198.18.0.0/15 for an external range", transient=False
        )

    def _teardown_fabric(self, site: Site) -> None:
        host.del_host_leg(site.host_if)
        host.delete_namespace(site.fabric)
        site.meta_path.unlink(missing_ok=True)
        shutil.rmtree(site.dir / "run", ignore_errors=True)
        shutil.rmtree(RUNTIME / site.key, ignore_errors=True)

    # -- addresses -----------------------------------------------------------

    def _computed(self, site: Site, record: Record) -> dict[str, AttrValue]:
        if record.kind not in ("port", "vip"):
            return {}
        pool, cidr = self._pool(site, record)
        net = ipaddress.ip_network(cidr)
        taken = {
            str(r.attrs.get("address"))
            for r in site.records.all()
            if r.kind in ("port", "vip") and self._pool_key(r) == pool
        }
        for addr in list(net.hosts())[1:]:  # the first is the gateway (or the host's leg)
            if str(addr) not in taken:
                return {"address": str(addr)}
        raise ProviderError(f"{record.id}: no address left in {cidr}", transient=False)

    @staticmethod
    def _pool_key(record: Record) -> str:
        return (
            EXTERNAL
            if record.attrs.get("network") == EXTERNAL
            else str(ref(record.attrs, "subnet"))
        )

    def _pool(self, site: Site, record: Record) -> tuple[str, str]:
        key = self._pool_key(record)
        if key == EXTERNAL:
            cidr = site.external_cidr()
            assert cidr is not None, "the fabric is made before any port"
            return key, cidr
        subnet = site.records.by_id(key)
        if subnet is None:
            raise ProviderError(f"{record.id}: its subnet {key} does not exist", transient=True)
        return key, str(subnet.attrs["cidr"])

    def _prefix(self, site: Site, port: Record) -> int:
        return ipaddress.ip_network(self._pool(site, port)[1]).prefixlen

    def _bridge(self, site: Site, port: Record) -> str:
        if port.attrs.get("network") == EXTERNAL:
            return "ext"
        subnet = site.records.by_id(str(ref(port.attrs, "subnet")))
        network = site.records.by_id(str(ref(subnet.attrs, "network"))) if subnet else None
        if network is None:
            raise ProviderError(f"{port.id}: its network does not exist", transient=True)
        return f"b{network.uid}"

    # -- building and checking -------------------------------------------------

    def _build(self, site: Site, record: Record) -> None:
        if record.kind == "network":
            name = f"b{record.uid}"
            if name not in host.links(site.fabric):
                host.batch(site.fabric, [f"link add {name} type bridge"])
            host.batch(site.fabric, [f"link set {name} up"])
        elif record.kind == "vm":
            self._build_vm(site, record)
        elif record.kind in ("lb", "lb-listener"):
            lb = record if record.kind == "lb" else self._lb_of(site, record)
            if lb is not None:
                self._refresh_lb(site, lb)

    def _build_vm(self, site: Site, vm: Record) -> None:
        ns = site.ns(vm.uid)
        host.ensure_namespace(ns)
        have = host.links(ns)
        fabric_lines, vm_lines = [], []
        for i, port_id in enumerate(refs(vm.attrs, "ports")):
            port = site.records.by_id(port_id)
            if port is None:
                raise ProviderError(f"{vm.id}: its port {port_id} does not exist", transient=True)
            outside, inside = f"v{vm.uid}{i}", f"eth{i}"
            if inside not in have:
                host.run(["ip", "-n", site.fabric, "link", "del", outside], check=False)
                peer = f"peer name {inside} address {_mac(port)} netns {ns}"
                fabric_lines.append(f"link add {outside} type veth {peer}")
            fabric_lines += [
                f"link set {outside} master {self._bridge(site, port)}",
                f"link set {outside} up",
            ]
            prefix = self._prefix(site, port)
            vm_lines += [
                f"addr replace {port.attrs['address']}/{prefix} dev {inside}",
                f"link set {inside} up",
            ]
        host.batch(site.fabric, fabric_lines)
        host.batch(ns, vm_lines)
        lb = next(
            (r for r in site.records.all() if r.kind == "lb" and vm.id in refs(r.attrs, "members")),
            None,
        )
        if lb is not None:
            self._refresh_lb(site, lb)
        else:
            self._start_backend(site, vm)

    def _start_backend(self, site: Site, vm: Record) -> None:
        if host.alive(vm.run.get("backend"), f"uid={vm.uid}"):
            return
        ns = site.ns(vm.uid)
        host.nft(ns, _redirect_ruleset())
        ready = site.run_dir(vm.uid) / "backend.ready"
        ready.unlink(missing_ok=True)
        argv = [  # no site: the back-end imports the stdlib only (1.3 MB less per VM)
            "env",
            f"PYTHONPATH={PACKAGE_ROOT}",
            sys.executable,
            "-S",
            "-m",
            "cloudlet.providers.local.backend",
            "--id",
            vm.id,
            "--tcp",
            str(BACKEND_TCP),
            "--udp",
            str(BACKEND_UDP),
            "--ready-file",
            str(ready),
            "--mark",
            f"uid={vm.uid}",
        ]
        vm.run["backend"] = host.spawn(ns, argv, site.run_dir(vm.uid) / "backend.log")
        site.records.put(vm)
        _wait_for(ready, f"{vm.id}: its back-end")

    def _lb_of(self, site: Site, listener: Record) -> Record | None:
        return next((site.records.by_id(d) for d in listener.deps if d.startswith("lb/")), None)

    def _refresh_lb(self, site: Site, lb: Record) -> None:
        """Render the LB's listeners into haproxy/nginx and (re)start them in
        every member VM's namespace that exists."""
        listeners = [r for r in site.records.all() if r.kind == "lb-listener" and lb.id in r.deps]
        public = site.records.by_id(str(ref(lb.attrs, "address")))
        bind = str(public.attrs.get("address")) if public else "0.0.0.0"
        backends = {
            t: self._backend_address(site, t) for r in listeners for t in refs(r.attrs, "targets")
        }
        pids: dict[str, dict[str, int]] = {}
        for member_id in refs(lb.attrs, "members"):
            member = site.records.by_id(member_id)
            if member is None or site.ns(member.uid) not in host.namespaces():
                continue
            ns = site.ns(member.uid)
            if member.run.get("backend"):
                host.kill(int(member.run.pop("backend")))
                site.records.put(member)
            host.nft(ns, "flush ruleset\n")
            for pid in lb.run.get("members", {}).get(member.uid, {}).values():
                host.kill(int(pid))
            cfg = lb_config(lb, listeners, bind, backends, site.lb_dir(lb.uid, member.uid))
            logs = site.run_dir(lb.uid)
            pids[member.uid] = {
                name: host.spawn(ns, argv, logs / f"{member.uid}.{name}.log")
                for name, argv in lb_daemons(cfg).items()
            }
        lb.run["members"] = pids
        site.records.put(lb)

    def _backend_address(self, site: Site, vm_id: str) -> str | None:
        vm = site.records.by_id(vm_id)
        for port_id in refs(vm.attrs, "ports") if vm else ():
            port = site.records.by_id(port_id)
            if port is not None and port.attrs.get("network") != EXTERNAL:
                return str(port.attrs.get("address"))
        return None

    def _unbuild(self, site: Site, record: Record) -> None:
        if record.kind == "vm":
            host.delete_namespace(site.ns(record.uid))
            for i in range(len(refs(record.attrs, "ports"))):
                host.run(["ip", "-n", site.fabric, "link", "del", f"v{record.uid}{i}"], check=False)
        elif record.kind == "network":
            host.run(["ip", "-n", site.fabric, "link", "del", f"b{record.uid}"], check=False)
        elif record.kind == "lb":
            for daemons in record.run.get("members", {}).values():
                for pid in daemons.values():
                    host.kill(int(pid))
        elif record.kind == "lb-listener":
            lb = self._lb_of(site, record)
            if lb is not None:
                site.records.remove(record.uid)
                self._refresh_lb(site, lb)

    def _health(self, site: Site, record: Record, present: set[str]) -> dict[str, AttrValue]:
        """``broken`` (why) when what the record describes is not all there."""
        why = None
        if record.kind == "vm":
            if site.ns(record.uid) not in present:
                why = "its namespace is gone"
            elif "backend" in record.run and not host.alive(
                record.run["backend"], f"uid={record.uid}"
            ):
                why = "its back-end is not running"
        elif record.kind == "network" and f"b{record.uid}" not in host.links(site.fabric):
            why = "its bridge is gone"
        elif record.kind == "lb":
            for member, daemons in record.run.get("members", {}).items():
                dead = [n for n, pid in daemons.items() if not host.alive(pid, member)]
                if dead:
                    why = f"{', '.join(sorted(dead))} not running on {member}"
        if why is None:
            return {"status": "ACTIVE"} if record.kind == "vm" else {}
        return {"broken": why, "status": "ERROR"} if record.kind == "vm" else {"broken": why}


def _mac(port: Record) -> str:
    """A port keeps its MAC address (as a Neutron port does): a VM re-made on
    it answers at once, with no neighbour entry elsewhere gone stale."""
    digest = hashlib.sha1(port.uid.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


def _redirect_ruleset() -> str:
    return (
        "flush ruleset\n"
        "table ip cloudlet {\n"
        "  chain pre {\n"
        "    type nat hook prerouting priority dstnat; policy accept;\n"
        f"    tcp dport != {BACKEND_TCP} redirect to :{BACKEND_TCP}\n"
        f"    udp dport != {BACKEND_UDP} redirect to :{BACKEND_UDP}\n"
        "  }\n"
        "}\n"
    )


def _wait_for(path: Path, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise ProviderError(f"{what} did not start within {timeout:g} s", transient=True)
        time.sleep(0.02)
