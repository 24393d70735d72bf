"""The files ``cloudlet export onboard`` renders hold up under the tools that
will read them: cloud-init's own schema check (Debian package cloud-init),
``systemd-analyze verify`` on the unit and its TLS drop-in exactly as the user
data writes them, and ``sh -n`` on the install script. Each check is shown to
be able to fail (a broken copy is rejected)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, cli, ok

TLS = [
    "--tls-ca",
    "/etc/cloudlet/tls/ca.pem",
    "--tls-cert",
    "/etc/cloudlet/tls/client.pem",
    "--tls-key",
    "/etc/cloudlet/tls/client-key.pem",
]
WHEEL = "cloudlet-0.1.0-py3-none-any.whl"
UNIT = "/etc/systemd/system/cloudlet-reconcile.service"
INSTALLED = "/usr/local/bin/cloudlet"


def _tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} missing: run `make system-deps`"
    return found


def render(tmp_path: Path, *flags: str, name: str = "user-data.yaml") -> Path:
    out = tmp_path / name
    ok(cli("export", "onboard", *flags, "-o", out, state_dir=tmp_path / "state"))
    return out


def schema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("cloud-init"), "schema", "--config-file", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def files_of(path: Path) -> dict[str, dict[str, Any]]:
    return {f["path"]: f for f in yaml.safe_load(path.read_text())["write_files"]}


@pytest.mark.parametrize(
    "flags",
    [
        ("--index", "https://pypi.site.example/simple", "--version", "0.2.0", *TLS),
        ("--index", "http://10.0.0.5:3141/root/pypi/+simple/", "--tls-ca", "/etc/ca.pem"),
    ],
    ids=["index-mtls", "index-ca-only"],
)
def test_user_data_passes_cloud_inits_schema(tmp_path: Path, flags: tuple[str, ...]) -> None:
    out = render(tmp_path, *flags, "--etcd", "10.0.0.11:2379,10.0.0.12:2379")
    proc = schema(out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Valid cloud-config" in proc.stdout


def test_a_wheel_in_the_user_data_passes_too_and_a_broken_file_does_not(tmp_path: Path) -> None:
    wheel = tmp_path / "cloudlet-0.2.0-py3-none-any.whl"
    wheel.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 8)
    out = render(tmp_path, "--wheel", str(wheel), "--version", "0.2.0", "--etcd", "e:2379")
    proc = schema(out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text(out.read_text().replace("runcmd:\n", "runcmd: 5\nx:\n", 1))
    assert schema(broken).returncode != 0, "the schema check cannot fail: it checks nothing"


def _units_as_written(user_data: Path, into: Path) -> Path:
    """The unit and its drop-ins where the user data puts them, relative to
    ``into``; ExecStart pointed at this Python's cloudlet (verify checks that the
    binary exists; the VM's /usr/local/bin/cloudlet is not on a test machine)."""
    unit = None
    for path, f in files_of(user_data).items():
        if not path.startswith("/etc/systemd/system/"):
            continue
        dst = into / path.removeprefix("/etc/systemd/system/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(f["content"].replace(INSTALLED, f"{sys.executable} -m cloudlet"))
        if path == UNIT:
            unit = dst
    assert unit is not None and (into / "cloudlet-reconcile.service.d").is_dir()
    return unit


def verify(unit: Path) -> list[str]:
    """``systemd-analyze verify`` with the unit's folder on the search path,
    so its drop-ins load; the complaints about this unit only."""
    proc = subprocess.run(
        [_tool("systemd-analyze"), "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"SYSTEMD_UNIT_PATH": f"{unit.parent}:", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stderr.splitlines() if "cloudlet-reconcile" in line]


def test_the_unit_and_its_tls_dropin_verify_as_written(tmp_path: Path) -> None:
    out = render(tmp_path, "--index", "https://m.example/simple", "--etcd", "e:2379", *TLS)
    units = tmp_path / "units"
    unit = _units_as_written(out, units)
    assert verify(unit) == []
    assert files_of(out)[UNIT]["content"] == (ROOT / "contrib" / unit.name).read_text()
    # the drop-in is read: a wrong key in it is reported
    dropin = units / "cloudlet-reconcile.service.d" / "etcd-tls.conf"
    dropin.write_text(dropin.read_text() + "NoSuchKey=1\n")
    assert any("NoSuchKey" in line for line in verify(unit))


def test_the_install_script_is_valid_sh(tmp_path: Path) -> None:
    out = render(tmp_path, "--index", "https://m.example/simple", "--etcd", "e:2379")
    script = tmp_path / "cloudlet-install"
    script.write_text(files_of(out)["/usr/local/sbin/cloudlet-install"]["content"])
    subprocess.run(["sh", "-n", str(script)], check=True)
    script.write_text(script.read_text() + "\nif then fi\n")
    assert subprocess.run(["sh", "-n", str(script)], capture_output=True).returncode != 0


def test_heat_platform_vm_carries_valid_user_data(tmp_path: Path) -> None:
    stack = tmp_path / "stack.yaml"
    flags = ["--platform-vm", "debian-12,m1.small,internal", "--index", "https://m.example/simple"]
    ok(
        cli(
            "export", "heat", ROOT / "examples" / "openstack.yaml", *flags,
            "--etcd", "10.0.0.11:2379", "-o", stack, state_dir=tmp_path / "state",
        )
    )  # fmt: skip
    vm = yaml.safe_load(stack.read_text())["resources"]["cloudlet_platform_vm"]
    assert vm["type"] == "OS::Nova::Server"
    user_data = tmp_path / "from-heat.yaml"
    user_data.write_text(vm["properties"]["user_data"])
    proc = schema(user_data)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["export", "onboard", "--index", "https://m/simple"], "needs --etcd ENDPOINTS"),
        (["export", "onboard", "--etcd", "e:2379"], "--wheel PATH or --index URL"),
        (["export", "onboard", "--etcd", "e:2379", "--wheel", f"/nope/{WHEEL}"],
         "cannot read --wheel /nope/"),
        (["export", "heat"], "export heat needs FILE"),
        (["export", "heat", str(ROOT / "examples" / "openstack.yaml"), "--platform-vm", "img,flv"],
         "IMAGE,FLAVOR,NETWORK"),
    ],
)  # fmt: skip
def test_onboarding_mistakes_are_one_line(tmp_path: Path, args: list[str], says: str) -> None:
    proc = ok(cli(*args, state_dir=tmp_path / "state"), 1)
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("cloudlet: "), proc.stderr
    assert says in proc.stderr


def test_heat_refuses_a_wheel_too_big_for_nova(tmp_path: Path) -> None:
    wheel = tmp_path / "cloudlet-0.1.0-py3-none-any.whl"
    wheel.write_bytes(bytes(60_000))
    argv = ["export", "heat", ROOT / "examples" / "openstack.yaml", "--wheel", wheel]
    proc = ok(cli(*argv, "--platform-vm", "i,f,n", "--etcd", "e:2379", state_dir=tmp_path / "s"), 1)
    assert "over Nova's 65535 bytes" in proc.stderr and "--index" in proc.stderr
    # export onboard renders it (other platforms take more) and warns
    proc = ok(cli("export", "onboard", "--wheel", wheel, "--etcd", "e:2379", state_dir=None))
    assert "#cloud-config" in proc.stdout and "over Nova's 64 KiB" in proc.stderr
