"""A load balancer on ``local``: each member VM's namespace runs ``cloudlet
lb-agent``, exactly as a real LB VM would, against a document the provider
writes for it (``<lb_dir>/lb.json``, :mod:`cloudlet.lb.document`); the agent
runs haproxy (TCP), nginx stream (UDP) and, with ``redundancy: vip``,
keepalived (its instance from ``vips.py``), and reports what it runs
(``<lb_dir>/report.json``).

So a change of the LB or its listeners only rewrites the documents (and
SIGHUPs the agents to act at once): the agents reload their daemons in
place, established connections survive, and keepalived keeps the VIP where
it is. A step is done when every agent reports the new document applied
(:func:`settle`, bounded; the agent's own refusal fails the step), so a
converged sync still means traffic flows.

A member VM that is gone is the VM's drift: the LB goes on through its other
member, and the VM, re-created, joins again (document and agent, from
``vms.build``). The LB itself is broken when a member that is there lacks
its agent or a daemon, or when no member is there at all.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from cloudlet.errors import ProviderError
from cloudlet.lb import Vrrp, document
from cloudlet.model.kinds import EXTERNAL, ref, refs
from cloudlet.model.resources import AttrValue
from cloudlet.providers.local import host, vips
from cloudlet.providers.local.lbconf import lb_config
from cloudlet.providers.local.records import Record
from cloudlet.providers.local.site import Site

#: How long a step waits for every agent to apply its document.
AGENT_WAIT = 30.0
#: How often an agent reads its document by itself (it is SIGHUPed on a change).
AGENT_INTERVAL = 1.0
#: Where the ``cloudlet`` package is, for agents started in a namespace.
PACKAGE_ROOT = Path(__file__).resolve().parents[3]


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


def settle_listener(site: Site, listener: Record) -> None:
    lb = lb_of_listener(site, listener)
    if lb is not None:
        settle(site, lb)


def settle_member(site: Site, vm: Record) -> None:
    lb = lb_of_member(site, vm.id)
    if lb is not None:
        settle(site, lb)


# -- documents and agents ------------------------------------------------------------


def refresh(site: Site, lb: Record) -> None:
    """Write each present member's document; make sure one agent runs in
    its namespace (SIGHUPed when its document changed)."""
    listeners = [r for r in site.records.all() if r.kind == "lb-listener" and lb.id in r.deps]
    public = site.records.by_id(str(ref(lb.attrs, "address")))
    if public is not None and public.kind == "floating-ip":  # the router translates it
        public = site.records.by_id(str(ref(public.attrs, "target")))
    bind = str(public.attrs.get("address")) if public else "0.0.0.0"
    backends = {t: backend_address(site, t) for r in listeners for t in refs(r.attrs, "targets")}
    agents: dict[str, int] = dict(lb.run.get("agents", {}))
    for member in present_members(site, lb, host.namespaces()):
        where = site.lb_dir(lb.uid, member.uid)
        cfg = lb_config(lb, listeners, bind, backends, where, _vrrp(site, lb, member))
        changed = _write_document(where / "lb.json", document.encode(cfg))
        pid = agents.get(member.uid)
        if agent_running(site, lb, member, pid):
            if changed:
                os.kill(int(str(pid)), signal.SIGHUP)
            continue
        _join(site, lb, member)
        agents[member.uid] = _spawn_agent(site, lb, member)
        lb.run["agents"] = agents
        site.records.put(lb)  # the pid first: a crash from here on still finds it
    members = {m.uid for m in _members(site, lb)}
    for uid in [u for u in agents if u not in members]:  # no longer a member
        _stop_member(site, lb, uid, agents.pop(uid))
    lb.run["agents"] = agents
    lb.run.pop("members", None)  # the daemons' pids, before there were agents
    site.records.put(lb)


def _members(site: Site, lb: Record) -> list[Record]:
    found = (site.records.by_id(m) for m in refs(lb.attrs, "members"))
    return [m for m in found if m is not None]


def present_members(site: Site, lb: Record, present: set[str]) -> list[Record]:
    return [m for m in _members(site, lb) if site.ns(m.uid) in present]


def _vrrp(site: Site, lb: Record, member: Record) -> Vrrp | None:
    if lb.attrs.get("redundancy") != "vip":
        return None
    vip = site.records.by_id(str(ref(lb.attrs, "address")))
    return vips.instance(site, vip, member) if vip is not None and vip.kind == "vip" else None


def _write_document(path: Path, text: str) -> bool:
    """Atomically (the agent reads the old text or the new); whether it changed."""
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def agent_running(site: Site, lb: Record, member: Record, pid: Any) -> bool:
    """Whether ``pid`` is this member's agent, in its namespace as it is now."""
    mark = str(site.lb_dir(lb.uid, member.uid))
    return host.alive(pid, mark) and host.in_namespace(int(pid), site.ns(member.uid))


def _join(site: Site, lb: Record, member: Record) -> None:
    """Before a member's agent starts: nothing left of an earlier one (in a
    namespace since deleted), no back-end or keepalived of the plain VM it
    was built as, its namespace ready for the VIP (``vips.lb_member``)."""
    from cloudlet.providers.local import vms  # a member VM is built by vms, which calls us

    _kill_marked(site, lb, member.uid)
    vms.stop_backend(site, member)
    vips.lb_member(site, lb, member)
    (site.lb_dir(lb.uid, member.uid) / "report.json").unlink(missing_ok=True)


def _spawn_agent(site: Site, lb: Record, member: Record) -> int:
    where = site.lb_dir(lb.uid, member.uid)
    argv = [  # the agent's light entry point: `cloudlet lb-agent` without the engine's imports
        "env", f"PYTHONPATH={PACKAGE_ROOT}", sys.executable, "-m", "cloudlet.agent",
        "--source", f"file:{where / 'lb.json'}", "--runtime-dir", str(where),
        "--report", str(where / "report.json"), "--interval", str(AGENT_INTERVAL),
    ]  # fmt: skip
    log = site.run_dir(lb.uid) / f"{member.uid}.agent.log"
    return host.spawn(site.ns(member.uid), argv, log)


def _kill_marked(site: Site, lb: Record, member_uid: str) -> None:
    """Every process running from the member's LB directory: an agent and
    its daemons, wherever they are (a deleted namespace hides them)."""
    for pid in host.marked_pids(str(site.lb_dir(lb.uid, member_uid)) + "/"):
        host.kill(pid)


def _stop_member(site: Site, lb: Record, member_uid: str, pid: Any) -> None:
    """SIGTERM to the agent (it stops its daemons, keepalived first), then
    whatever is left from its directory, then the directory."""
    if pid and host.alive(pid, str(site.lb_dir(lb.uid, member_uid))):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGCONT)  # a stopped (hung) agent acts on SIGTERM too
        host.kill(int(pid), grace=15.0)
    _kill_marked(site, lb, member_uid)
    shutil.rmtree(site.lb_dir(lb.uid, member_uid), ignore_errors=True)


# -- waiting for the agents ------------------------------------------------------------


def read_report(path: Path) -> dict[str, Any] | None:
    """The agent's report as JSON (``cloudlet.agent.report``'s format; the
    provider does not import the agent: they are separate layers)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def settle(site: Site, lb: Record, timeout: float = AGENT_WAIT) -> None:
    """Wait until every present member's agent has applied the document now
    in its file (one written later includes ours); fail with the agent's
    refusal, or when it does not answer within ``timeout`` seconds."""
    current = site.records.get(lb.uid)
    if current is None:
        return
    deadline = time.monotonic() + timeout
    for member in present_members(site, current, host.namespaces()):
        pid = current.run.get("agents", {}).get(member.uid)
        while not _applied(site, current, member, pid):
            if time.monotonic() > deadline:
                raise ProviderError(
                    f"{lb.id}: its agent on {member.id} did not apply its document "
                    f"within {timeout:g} s (log: {site.run_dir(lb.uid)})",
                    transient=True,
                )
            time.sleep(0.05)


def _applied(site: Site, lb: Record, member: Record, pid: Any) -> bool:
    where = site.lb_dir(lb.uid, member.uid)
    try:
        want = document.digest((where / "lb.json").read_text())
    except OSError:
        return True  # no document (the member went meanwhile): nothing to wait for
    if not agent_running(site, lb, member, pid):
        raise ProviderError(f"{lb.id}: its agent on {member.id} is not running", transient=True)
    report = read_report(where / "report.json")
    if report is None or report.get("pid") != pid:
        return False
    if report.get("applied") == want:
        return True
    if report.get("latest") == want and report.get("error"):
        raise ProviderError(
            f"{lb.id}: its agent on {member.id} refuses the document: {report['error']}",
            transient=False,
        )
    return False


# -- the rest --------------------------------------------------------------------------


def backend_address(site: Site, vm_id: str) -> str | None:
    """A target VM's address on an internal subnet (where the LB reaches it)."""
    vm = site.records.by_id(vm_id)
    for port_id in refs(vm.attrs, "ports") if vm else ():
        port = site.records.by_id(port_id)
        if port is not None and port.attrs.get("network") != EXTERNAL:
            return str(port.attrs.get("address"))
    return None


def unbuild(site: Site, lb: Record) -> None:
    for uid, pid in lb.run.get("agents", {}).items():
        _stop_member(site, lb, uid, pid)
    for daemons in lb.run.get("members", {}).values():  # a record from before the agents
        for pid in daemons.values():
            host.kill(int(pid))


def health(site: Site, lb: Record, present: set[str]) -> dict[str, AttrValue]:
    members = present_members(site, lb, present)
    if not members and refs(lb.attrs, "members"):
        return {"broken": "none of its member VMs is there"}
    for member in members:
        why = _member_trouble(site, lb, member)
        if why is not None:
            return {"broken": why}
    return {}


def _member_trouble(site: Site, lb: Record, member: Record) -> str | None:
    """Why a present member does not serve the LB: its agent, or a daemon
    the agent reports, is not running (checked on the host, not taken from
    the report: an agent that hangs reports nothing new)."""
    pid = lb.run.get("agents", {}).get(member.uid)
    if not agent_running(site, lb, member, pid):
        return f"its LB agent is not running on {member.id}"
    where = site.lb_dir(lb.uid, member.uid)
    report = read_report(where / "report.json")
    if report is None or report.get("pid") != pid:
        return None  # starting: the step that started it waits for its report
    dead = sorted(
        str(d.get("name"))
        for d in report.get("daemons", ())
        if not host.alive(d.get("pid"), str(where))
    )
    return f"{', '.join(dead)} not running on {member.id}" if dead else None
