"""A VM on ``local``: a namespace with a veth per port, running a back-end
that answers on every port (an nftables redirect in its namespace sends any
TCP or UDP port to the back-end's two), unless it is a load balancer's VM,
which runs haproxy and nginx instead (``lbs.py``). A node of a cluster with
a VIP runs keepalived beside its back-end (``vips.py``)."""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

from cloudlet.errors import ProviderError
from cloudlet.model.kinds import refs
from cloudlet.model.resources import AttrValue
from cloudlet.providers.local import host, lbs, routers, security, vips
from cloudlet.providers.local.records import Record
from cloudlet.providers.local.site import Site

#: Every TCP and UDP port of a VM is redirected to its back-end's two ports.
BACKEND_TCP, BACKEND_UDP = 7000, 7001
#: Where the ``cloudlet`` package is, for back-ends started without site-packages.
PACKAGE_ROOT = Path(__file__).resolve().parents[3]


def build(site: Site, vm: Record) -> None:
    ns = site.ns(vm.uid)
    if ns not in host.namespaces():  # re-made on its record: what its lost namespace ran goes
        _kill_backend(site, vm)
        vips.stop_node(site, vm)
    host.ensure_namespace(ns)
    _links(site, vm, ns)
    routers.vm_routes(site, vm)
    lb = lbs.lb_of_member(site, vm.id)
    if lb is not None:
        lbs.refresh(site, lb)
    else:
        _start_backend(site, vm)
        vips.serve_node(site, vm)  # a cluster's VIP: keepalived beside the back-end


def _links(site: Site, vm: Record, ns: str) -> None:
    have = host.links(ns)
    fabric_lines: list[str] = []
    vm_lines: list[str] = []
    for i, port_id in enumerate(refs(vm.attrs, "ports")):
        port = site.records.by_id(port_id)
        if port is None:
            raise ProviderError(f"{vm.id}: its port {port_id} does not exist", transient=True)
        outside, inside = f"v{vm.uid}{i}", f"eth{i}"
        if inside not in have:
            host.run(["ip", "-n", site.fabric, "link", "del", outside], check=False)
            peer = f"peer name {inside} address {mac(port)} netns {ns}"
            fabric_lines.append(f"link add {outside} type veth {peer}")
        fabric_lines += [f"link set {outside} master {site.bridge(port)}", f"link set {outside} up"]
        vm_lines += [
            f"addr replace {port.attrs['address']}/{site.prefix(port)} dev {inside}",
            f"link set {inside} up",
        ]
    host.batch(site.fabric, fabric_lines)
    host.batch(ns, vm_lines)


def _start_backend(site: Site, vm: Record) -> None:
    if host.alive(vm.run.get("backend"), f"uid={vm.uid}"):
        return
    ns = site.ns(vm.uid)
    host.nft(ns, security.ruleset_for(site, vm, backend=True))
    ready = site.run_dir(vm.uid) / "backend.ready"
    ready.unlink(missing_ok=True)
    argv = [  # no site-packages: the back-end needs the stdlib only (1.3 MB less per VM)
        "env", f"PYTHONPATH={PACKAGE_ROOT}", sys.executable, "-S",
        "-m", "cloudlet.providers.local.backend", "--id", vm.id,
        "--tcp", str(BACKEND_TCP), "--udp", str(BACKEND_UDP),
        "--ready-file", str(ready), "--mark", f"uid={vm.uid}", "--mark", _mark(site, vm),
    ]  # fmt: skip
    vm.run["backend"] = host.spawn(ns, argv, site.run_dir(vm.uid) / "backend.log")
    site.records.put(vm)
    _wait_for(ready, f"{vm.id}: its back-end")


def _mark(site: Site, vm: Record) -> str:
    """The argument that tags the VM's back-end: its namespace's name, unique
    on the host (it carries the cloudlet and the site's key)."""
    return f"ns={site.ns(vm.uid)}"


def _kill_backend(site: Site, vm: Record) -> None:
    """Stop the VM's back-end: the recorded one, and any other carrying its
    mark (started by a create cut off before the pid was recorded). Neither
    needs the namespace: one deleted out of band (``ip netns del``) leaves
    its processes running, and them holding it, unnamed."""
    pid = vm.run.get("backend")
    if pid is not None and host.alive(int(pid), f"uid={vm.uid}"):
        host.kill(int(pid))
    for other in host.marked(_mark(site, vm)):
        host.kill(other)


def unbuild(site: Site, vm: Record) -> None:
    _kill_backend(site, vm)  # by pid and mark: its namespace may be gone, its processes not
    vips.stop_node(site, vm)  # by pid, likewise
    host.delete_namespace(site.ns(vm.uid))
    for i in range(len(refs(vm.attrs, "ports"))):
        host.run(["ip", "-n", site.fabric, "link", "del", f"v{vm.uid}{i}"], check=False)


def health(site: Site, vm: Record, present: set[str]) -> dict[str, AttrValue]:
    why = None
    if site.ns(vm.uid) not in present:
        why = "its namespace is gone"
    elif "backend" in vm.run and not host.alive(vm.run["backend"], f"uid={vm.uid}"):
        why = "its back-end is not running"
    else:
        why = vips.node_trouble(site, vm)
    return {"status": "ACTIVE"} if why is None else {"broken": why, "status": "ERROR"}


def stop_backend(site: Site, vm: Record) -> None:
    """Before the VM becomes an LB's: no back-end, no redirect (the filter of
    its ports stays)."""
    _kill_backend(site, vm)
    if vm.run.pop("backend", None):
        site.records.put(vm)
    host.nft(site.ns(vm.uid), security.ruleset_for(site, vm, backend=False))


def refresh_port(site: Site, port: Record) -> None:
    """A port changed: its VM's filter is reloaded (``security``) and, on a
    plain VM, the VIPs its ports list are served (``vips.serve_node``): a
    cluster's ``vip: true`` added later changes its nodes' ports, not the
    nodes. An LB's member VM is its LB's business (``lbs.refresh``)."""
    security.refresh_port(site, port)
    present = host.namespaces()
    for vm in security.vms_using(site, {port.id}):
        if site.ns(vm.uid) in present and lbs.lb_of_member(site, vm.id) is None:
            vips.serve_node(site, vm)


def mac(port: Record) -> str:
    """A port keeps its MAC address (as a Neutron port does): a VM re-made on
    it answers at once, with no neighbour entry elsewhere gone stale."""
    digest = hashlib.sha1(port.uid.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


def redirect_ruleset() -> str:
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
