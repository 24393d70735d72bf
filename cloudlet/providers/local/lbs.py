"""A load balancer on ``local``: its VMs run haproxy (TCP) and nginx stream
(UDP), rendered from its listener records by ``cloudlet.lb``, and keepalived
for its VIP (``vips.py``). The LB and its
listeners are records; every change to either re-renders the daemons in
each member VM's namespace that exists."""

from __future__ import annotations

from cloudlet.model.kinds import EXTERNAL, ref, refs
from cloudlet.model.resources import AttrValue
from cloudlet.providers.local import host, vips
from cloudlet.providers.local.lbconf import lb_config, lb_daemons
from cloudlet.providers.local.records import Record
from cloudlet.providers.local.site import Site


def lb_of_member(site: Site, vm_id: str) -> Record | None:
    return next(
        (r for r in site.records.all() if r.kind == "lb" and vm_id in refs(r.attrs, "members")),
        None,
    )


def lb_of_listener(site: Site, listener: Record) -> Record | None:
    return next((site.records.by_id(d) for d in listener.deps if d.startswith("lb/")), None)


def build_listener(site: Site, listener: Record) -> None:
    lb = lb_of_listener(site, listener)
    if lb is not None:
        refresh(site, lb)


def unbuild_listener(site: Site, listener: Record) -> None:
    lb = lb_of_listener(site, listener)
    if lb is not None:
        site.records.remove(listener.uid)
        refresh(site, lb)


def refresh(site: Site, lb: Record) -> None:
    """Render the LB's listeners and (re)start its daemons in every member
    VM's namespace that exists."""
    from cloudlet.providers.local import vms  # a member VM is built by vms, which calls us

    listeners = [r for r in site.records.all() if r.kind == "lb-listener" and lb.id in r.deps]
    public = site.records.by_id(str(ref(lb.attrs, "address")))
    if public is not None and public.kind == "floating-ip":  # the router translates it
        public = site.records.by_id(str(ref(public.attrs, "target")))
    bind = str(public.attrs.get("address")) if public else "0.0.0.0"
    backends = {t: backend_address(site, t) for r in listeners for t in refs(r.attrs, "targets")}
    present = host.namespaces()
    pids: dict[str, dict[str, int]] = {}
    for member_id in refs(lb.attrs, "members"):
        member = site.records.by_id(member_id)
        if member is None or site.ns(member.uid) not in present:
            continue
        vms.stop_backend(site, member)
        for pid in host.pids(site.ns(member.uid)):  # ours, recorded or not (a crash mid-way)
            host.kill(pid)
        vrrp = vips.lb_member(site, lb, member)
        cfg = lb_config(lb, listeners, bind, backends, site.lb_dir(lb.uid, member.uid), vrrp)
        logs = site.run_dir(lb.uid)
        pids[member.uid] = {
            name: host.spawn(site.ns(member.uid), argv, logs / f"{member.uid}.{name}.log")
            for name, argv in lb_daemons(cfg).items()
        }
    lb.run["members"] = pids
    site.records.put(lb)


def backend_address(site: Site, vm_id: str) -> str | None:
    """A target VM's address on an internal subnet (where the LB reaches it)."""
    vm = site.records.by_id(vm_id)
    for port_id in refs(vm.attrs, "ports") if vm else ():
        port = site.records.by_id(port_id)
        if port is not None and port.attrs.get("network") != EXTERNAL:
            return str(port.attrs.get("address"))
    return None


def unbuild(site: Site, lb: Record) -> None:
    for daemons in lb.run.get("members", {}).values():
        for pid in daemons.values():
            host.kill(int(pid))


def health(site: Site, lb: Record, present: set[str]) -> dict[str, AttrValue]:
    for member, daemons in lb.run.get("members", {}).items():
        dead = [n for n, pid in daemons.items() if not host.alive(pid, member)]
        if dead:
            return {"broken": f"{', '.join(sorted(dead))} not running on {member}"}
    return {}
