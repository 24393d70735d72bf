"""VIPs on ``local``: keepalived (VRRPv3, unicast) moving an address among
the VMs whose ports list the VIP in their ``allowedAddressPairs``.

A VIP record is an address from its pool (``site.computed``); what makes it
real is keepalived in the namespace of every VM that may hold it, on the
interface of the port that lists it, with the other holders' ports as
unicast peers (one per line: pitfall 2 of the measurements). Two kinds of
holder, the same instance:

- an LB with ``redundancy: vip``: its two member VMs. keepalived is one more
  daemon of the LB (``lbs.refresh`` asks :func:`lb_member` for the member's
  instance and passes it to the renderer), so the LB's health already calls
  a dead keepalived ``broken``; haproxy and nginx bind the VIP on both
  members, hence ``ip_nonlocal_bind`` on the one that does not hold it.
- a cluster with ``vip: true``: its node VMs. Each node runs its back-end
  (which answers on every local address, the VIP included, through the
  VM's redirect) and a keepalived of its own (:func:`serve_node`, from
  ``vms.build``), whose pid the VM's record keeps: :func:`node_trouble` makes
  a dead one the VM's ``broken``.

Every instance starts ``BACKUP`` with ``nopreempt``, priorities by holder
order: the first holder wins the first election, and a holder that comes
back (a re-created VM) stays backup instead of taking the VIP back, so a
failure moves the VIP once, not twice. The advertisement interval is 0.1 s
(0.45-0.68 s failover measured for a deleted namespace). keepalived sends
the gratuitous ARPs on takeover that move the neighbour entries.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
from pathlib import Path

from cloudlet.lb import LbConfig, Vrrp, keepalived_argv, keepalived_config, section_name
from cloudlet.model.kinds import ref, refs
from cloudlet.providers.local import host
from cloudlet.providers.local.records import Record
from cloudlet.providers.local.site import Site

#: VRRP advertisement interval, seconds (VRRPv3 counts centiseconds).
ADVERT = 0.1
#: The first holder's priority; each next one is this much lower.
TOP_PRIORITY, PRIORITY_STEP = 200, 10


def holders(site: Site, vip: Record) -> list[tuple[Record, int, Record]]:
    """(vm, interface index, port) of every VM with a port listing ``vip``,
    by VM id: the order that sets the priorities."""
    records = site.records.all()
    by_id = {r.id: r for r in records}
    out = []
    for vm in (r for r in records if r.kind == "vm"):
        for i, port_id in enumerate(refs(vm.attrs, "ports")):
            port = by_id.get(port_id)
            if port is not None and vip.id in refs(port.attrs, "allowedAddressPairs"):
                out.append((vm, i, port))
                break
    return out


def instance(site: Site, vip: Record, vm: Record) -> Vrrp | None:
    """``vm``'s VRRP instance for ``vip``; None when no port of it lists the VIP."""
    found = holders(site, vip)
    mine = next(((n, i, p) for n, (v, i, p) in enumerate(found) if v.uid == vm.uid), None)
    if mine is None:
        return None
    position, index, port = mine
    address = ipaddress.ip_address(str(vip.attrs["address"]))
    return Vrrp(
        instance=section_name(vip.id),
        interface=f"eth{index}",
        vip=f"{address}/{site.prefix(vip)}",
        # unique among the VIPs of one pool while it is a /24 or smaller
        router_id=int(address) % 254 + 1,
        priority=max(1, TOP_PRIORITY - PRIORITY_STEP * position),
        peers=tuple(str(p.attrs["address"]) for v, _, p in found if v.uid != vm.uid),
        source=str(port.attrs["address"]),
        advert_interval=ADVERT,
        preempt=False,
    )


def _vip_of(site: Site, record: Record, key: str) -> Record | None:
    rid = ref(record.attrs, key)
    vip = site.records.by_id(str(rid)) if rid else None
    return vip if vip is not None and vip.kind == "vip" else None


def lb_member(site: Site, lb: Record, member: Record) -> Vrrp | None:
    """The LB member's VRRP instance (None unless ``redundancy: vip``), with
    its namespace made ready for it: the LB's daemons may bind the VIP while
    another member holds it, and no VIP is left over from a keepalived that
    was killed hard (it would be a second holder).

    A member VM is built before its LB's record exists, so it starts as a
    plain VM, keepalived included (:func:`serve_node`): that one stops here,
    as its back-end does, and the LB's own takes over."""
    stop_node(site, member)
    vip = _vip_of(site, lb, "address") if lb.attrs.get("redundancy") == "vip" else None
    if vip is None:
        return None
    vrrp = instance(site, vip, member)
    if vrrp is not None:
        ns = site.ns(member.uid)
        host.sysctl(ns, "net.ipv4.ip_nonlocal_bind", "1")
        _drop_address(ns, vrrp)
    return vrrp


def _drop_address(ns: str, vrrp: Vrrp) -> None:
    host.run(["ip", "-n", ns, "addr", "del", vrrp.vip, "dev", vrrp.interface], check=False)


# -- a cluster's VIP: keepalived on each node, beside its back-end ----------------


def node_vips(site: Site, vm: Record) -> list[Record]:
    """The VIPs a (non-LB) VM's ports list."""
    by_id = {r.id: r for r in site.records.all()}
    out: list[Record] = []
    for port_id in refs(vm.attrs, "ports"):
        port = by_id.get(port_id)
        for vip_id in refs(port.attrs, "allowedAddressPairs") if port else ():
            vip = by_id.get(vip_id)
            if vip is not None and vip.kind == "vip" and vip not in out:
                out.append(vip)
    return out


def _config(site: Site, vip: Record, vm: Record) -> LbConfig | None:
    vrrp = instance(site, vip, vm)
    if vrrp is None:
        return None
    return LbConfig(vip.id, (), vrrp, str(site.lb_dir(vip.uid, vm.uid)))


def serve_node(site: Site, vm: Record) -> None:
    """keepalived in ``vm``'s namespace for each VIP its ports list (started,
    or reloaded if its peers changed), and the other holders' keepalived
    reloaded with ``vm``'s port among their peers; a keepalived for a VIP
    its ports no longer list is stopped. Called when the VM is built and
    when one of its ports changes (``vms.refresh_port``): a cluster given
    ``vip: true`` after its nodes were made changes their ports only."""
    listed = node_vips(site, vm)
    for uid in set(vm.run.get("vips", {})) - {v.uid for v in listed}:
        stop_node(site, vm, uid)
    pids: dict[str, int] = dict(vm.run.get("vips", {}))
    for vip in listed:
        cfg = _config(site, vip, vm)
        if cfg is None:
            continue
        pid = pids.get(vip.uid)
        if _write(cfg) and host.alive(pid, _mark(vip, vm)):
            os.kill(int(str(pid)), signal.SIGHUP)
        elif not host.alive(pid, _mark(vip, vm)):
            assert cfg.vrrp is not None
            _drop_address(site.ns(vm.uid), cfg.vrrp)
            log = site.run_dir(vm.uid) / f"keepalived.{vip.uid}.log"
            pids[vip.uid] = host.spawn(site.ns(vm.uid), keepalived_argv(cfg), log)
        _reload_others(site, vip, vm)
    if pids != vm.run.get("vips", {}):
        vm.run["vips"] = pids
        site.records.put(vm)


def stop_node(site: Site, vm: Record, vip_uid: str | None = None) -> None:
    """Stop the keepalived ``vm`` runs as a plain VM, for ``vip_uid`` or
    every VIP: it is becoming an LB's, or going, or its VIP is."""
    pids: dict[str, int] = vm.run.get("vips", {})
    gone = {u: p for u, p in pids.items() if vip_uid in (None, u)}
    if not gone:
        return
    for uid, pid in gone.items():
        if host.alive(pid, f"/{uid}.{vm.uid}/"):
            host.kill(int(pid))  # SIGTERM: keepalived drops the VIP on its way out
        shutil.rmtree(site.lb_dir(uid, vm.uid), ignore_errors=True)
    vm.run["vips"] = {u: p for u, p in pids.items() if u not in gone}
    site.records.put(vm)


def unbuild(site: Site, vip: Record) -> None:
    """A VIP going away (a cluster's ``vip: false``): its holders stop serving it."""
    for vm in site.records.all():
        if vm.kind == "vm" and vip.uid in vm.run.get("vips", {}):
            stop_node(site, vm, vip.uid)


def _reload_others(site: Site, vip: Record, vm: Record) -> None:
    for other, _, _ in holders(site, vip):
        pid = other.run.get("vips", {}).get(vip.uid)
        if other.uid == vm.uid or not host.alive(pid, _mark(vip, other)):
            continue
        cfg = _config(site, vip, other)
        if cfg is not None and _write(cfg):
            os.kill(int(pid), signal.SIGHUP)


def _write(cfg: LbConfig) -> bool:
    """Write keepalived's configuration; whether it changed."""
    text = keepalived_config(cfg)
    path = Path(cfg.runtime_dir) / "keepalived.conf"
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True


def _mark(vip: Record, vm: Record) -> str:
    """What the command line of ``vm``'s keepalived for ``vip`` carries (its runtime dir)."""
    return f"/{vip.uid}.{vm.uid}/"


def node_trouble(site: Site, vm: Record) -> str | None:
    """Why the node's VIP service is not all there, or None."""
    for vip_uid, pid in sorted(vm.run.get("vips", {}).items()):
        vip = site.records.get(vip_uid)
        if vip is not None and not host.alive(pid, _mark(vip, vm)):
            return f"its keepalived for {vip.id} is not running"
    return None
