"""The vSphere config file: a field of the wrong type is named with its file."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudlet.errors import ProviderError
from cloudlet.model.spec import Platform
from cloudlet.providers.vsphere.config import load_config

PLATFORM = Platform(
    type="vsphere", datacenter="dc", cluster="c", datastore="ds", network="n", template="t"
)
BASE = "host: vc.example\nuser: u\npassword: p\n"


def load(tmp_path: Path, extra: str) -> None:
    path = tmp_path / "vsphere.yaml"
    path.write_text(BASE + extra)
    load_config(PLATFORM, {"VSPHERE_CONFIG": str(path)})


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ("flavors: [a, b]\n", "flavors must be a mapping, not a list"),
        ("images: [x]\n", "images must be a mapping, not a list"),
        ("taskTimeout: soon\n", "taskTimeout must be a number, not a string"),
        ("taskTimeout: -1\n", "taskTimeout must be a positive number"),
        ("dvSwitch: {a: 1}\n", "dvSwitch must be a string, not a mapping"),
        ("externalCidr: [198.18.0.0/15]\n", "externalCidr must be a string, not a list"),
    ],
)
def test_wrong_types_are_named(tmp_path: Path, extra: str, field: str) -> None:
    with pytest.raises(ProviderError) as caught:
        load(tmp_path, extra)
    assert not caught.value.transient
    assert str(caught.value).startswith(
        f"vsphere: config file {tmp_path / 'vsphere.yaml'}: {field}"
    )


def test_a_wrong_password_type_does_not_print_the_password(tmp_path: Path) -> None:
    path = tmp_path / "vsphere.yaml"
    path.write_text("host: vc.example\nuser: u\npassword: [topsecret]\n")
    with pytest.raises(ProviderError) as caught:
        load_config(PLATFORM, {"VSPHERE_CONFIG": str(path)})
    assert "password must be" in str(caught.value)
    assert "topsecret" not in str(caught.value)


def test_right_types_load(tmp_path: Path) -> None:
    load(tmp_path, "insecure: true\ntaskTimeout: 30\nflavors: {m9: {cpus: 2, memoryMb: 512}}\n")
