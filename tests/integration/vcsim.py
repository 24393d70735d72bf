"""govmomi's vCenter simulator for the vSphere tests, and an operator's console on it.

``running()`` builds the simulator if needed (tests/vcsim/build.sh, offline
from Debian's Go packages; ``make vcsim`` installs them), starts it on a
free loopback port, reads the URL it prints, and stops it with SIGTERM.
``OutOfBand`` changes the simulated vCenter with pyVmomi behind the engine's
back, as an operator would in the vSphere client (that is drift).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyVim.connect import Disconnect, SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from cloudlet.model.spec import Platform
from cloudlet.providers.vsphere import VsphereProvider, load_config

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "tests" / "vcsim" / "build.sh"
BINARY = ROOT / ".cache" / "vcsim" / "vcsim"
USER = "cloudlet-test"
PASSWORD = "vcsim-Secret-42"
START_TIMEOUT = 20.0

#: The simulator's VPX model: what examples/vsphere.yaml names too.
PLATFORM = Platform(
    type="vsphere",
    datacenter="DC0",
    cluster="DC0_C0",
    datastore="LocalDS_0",
    network="DC0_DVPG0",
    template="DC0_H0_VM0",
)


def ensure_built() -> Path:
    """The simulator binary; building it takes 15-45 s once, then under a second."""
    if shutil.which("go") is None and not BINARY.exists():
        raise RuntimeError(
            "vcsim is not built and Go is missing: run `make vcsim` (it installs "
            "golang-go and golang-github-vmware-govmomi-dev with apt-get)"
        )
    if shutil.which("go") is not None:
        subprocess.run(["sh", str(BUILD)], check=True, timeout=600)
    return BINARY


class Vcsim:
    """One running simulator process."""

    def __init__(self, *, tls: bool = False, cert: tuple[Path, Path] | None = None) -> None:
        """``tls``: https with httptest's built-in certificate (a 1024-bit key that OpenSSL
        will not verify); ``cert``: https with this (certificate, key) pair of PEM files."""
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process
        pair = ["-tlscert", str(cert[0]), "-tlskey", str(cert[1])] if cert else []
        self.proc = subprocess.Popen(
            [str(ensure_built()), "-listen", "127.0.0.1:0", "-username", USER]
            + (["-tls"] if tls else [])
            + pair,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env={**os.environ, "VCSIM_PASSWORD": PASSWORD},
        )
        self.url = self._read_url()

    def _read_url(self) -> str:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(START_TIMEOUT):
                self.stop()
                raise RuntimeError("vcsim printed no URL in time")
        line = self.proc.stdout.readline().decode().strip()
        if not line.startswith("VCSIM_URL="):
            self.stop()
            raise RuntimeError(f"vcsim did not start: {line!r}")
        return line.split("=", 1)[1]

    def env(self) -> dict[str, str]:
        """The credentials, as an operator exports them for the CLI."""
        return {"VSPHERE_HOST": self.url, "VSPHERE_USER": USER, "VSPHERE_PASSWORD": PASSWORD}

    def provider(self, platform: Platform = PLATFORM) -> VsphereProvider:
        return VsphereProvider(platform, load_config(platform, self.env()))

    def panics(self) -> list[str]:
        """Server-side panics so far: each one is a request the provider made that
        the simulator could not serve (the client saw a dropped connection)."""
        self._log.seek(0)
        lines = self._log.read().decode(errors="replace").splitlines()
        return [line for line in lines if "panic serving" in line]

    def close_log(self) -> None:
        self._log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextlib.contextmanager
def running(*, tls: bool = False, cert: tuple[Path, Path] | None = None) -> Iterator[Vcsim]:
    sim = Vcsim(tls=tls, cert=cert)
    try:
        yield sim
    finally:
        sim.stop()
    panics = sim.panics()
    sim.close_log()
    assert sim.proc.returncode == 0, f"vcsim exited {sim.proc.returncode} on SIGTERM"
    assert panics == [], f"the simulator panicked serving a request: {panics[:3]}"


class OutOfBand:
    """pyVmomi straight at the simulator: the operator's console, not the provider."""

    def __init__(self, sim: Vcsim) -> None:
        scheme, rest = sim.url.split("://", 1)
        host, port = rest.split("/", 1)[0].rsplit(":", 1)
        # https on 127.0.0.1: pyVmomi skips verification (this is the operator's console)
        self.si = SmartConnect(protocol=scheme, host=host, port=int(port), user=USER, pwd=PASSWORD)
        self.content = self.si.RetrieveContent()

    def close(self) -> None:
        Disconnect(self.si)

    def ref(self, uid: str) -> Any:
        if uid.startswith("vm-"):
            return vim.VirtualMachine(uid, self.si._stub)
        if uid.startswith("dvportgroup-"):
            return vim.dvs.DistributedVirtualPortgroup(uid, self.si._stub)
        return vim.Folder(uid, self.si._stub)

    def props(self, obj: Any, *paths: str) -> dict[str, Any]:
        pc = vmodl.query.PropertyCollector
        wanted = pc.PropertySpec(type=type(obj), pathSet=list(paths))
        spec = pc.FilterSpec(objectSet=[pc.ObjectSpec(obj=obj)], propSet=[wanted])
        found = self.content.propertyCollector.RetrievePropertiesEx([spec], pc.RetrieveOptions())
        return {p.name: p.val for o in (found.objects if found else []) for p in o.propSet}

    def remove(self, uid: str) -> None:
        obj = self.ref(uid)
        power = self.props(obj, "runtime.powerState") if isinstance(obj, vim.VirtualMachine) else {}
        if power.get("runtime.powerState") == "poweredOn":
            WaitForTask(obj.PowerOffVM_Task())
        WaitForTask(obj.Destroy_Task())

    def set_memory(self, uid: str, megabytes: int) -> None:
        vm = self.ref(uid)
        WaitForTask(vm.PowerOffVM_Task())
        WaitForTask(vm.ReconfigVM_Task(vim.vm.ConfigSpec(memoryMB=megabytes)))
        WaitForTask(vm.PowerOnVM_Task())

    def field_key(self, name: str, obj: Any) -> int:
        for field in self.props(self.content.customFieldsManager, "field")["field"]:
            if field.name == name and field.managedObjectType is type(obj):
                return int(field.key)
        raise KeyError(name)

    def fields_of(self, obj: Any) -> dict[str, str]:
        defs = self.props(self.content.customFieldsManager, "field")["field"]
        names = {f.key: f.name for f in defs}
        values = self.props(obj, "customValue").get("customValue", [])
        return {names[v.key]: v.value for v in values}

    def set_record_attr(self, uid: str, key: str, value: str) -> None:
        obj = self.ref(uid)
        record = json.loads(self.fields_of(obj)["cloudlet.record"])
        try:
            record["attrs"][key] = json.loads(value)
        except ValueError:
            record["attrs"][key] = value
        key_ = self.field_key("cloudlet.record", obj)
        self.content.customFieldsManager.SetField(entity=obj, key=key_, value=json.dumps(record))

    def find(self, path: str) -> Any:
        return self.content.searchIndex.FindByInventoryPath(path)

    def leftovers(self, owner: str) -> list[str]:
        """Anything of ``owner`` still in the inventory: its folder, VMs, port groups."""
        found = []
        if self.find(f"DC0/vm/cloudlet-{owner}") is not None:
            found.append(f"folder cloudlet-{owner}")
        view = self.content.viewManager.CreateContainerView(
            self.content.rootFolder, [vim.VirtualMachine, vim.dvs.DistributedVirtualPortgroup], True
        )
        try:
            for obj in view.view:
                name = self.props(obj, "name").get("name", "")
                if str(name).startswith(f"{owner}."):
                    found.append(f"{obj._moId} {name}")
        finally:
            view.DestroyView()
        return found
