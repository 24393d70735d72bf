"""platform.gateway: its validation (file:line:col), the nginx renderer, the provider's
options, and ``cloudlet export gateway`` (issue 12). nginx itself checks the rendered file
in tests/integration/openstack/test_gateway_e2e.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudlet.cmd.main import main
from cloudlet.errors import SpecError
from cloudlet.model.load import load_text
from cloudlet.model.spec import Gateway
from cloudlet.providers.openstack.config import gateway_options
from cloudlet.providers.openstack.gateway import auth_url, endpoint_overrides, render_nginx

HEAD = """\
apiVersion: cloudlet/v1
kind: Cloudlet
metadata: {{name: {name}}}
spec:
  platform:
    type: {type}
    cloud: osci-demo
    externalNetwork: public
    gateway:
"""
GOOD = """\
      address: 10.9.0.1
      endpoints:
        identity: http://192.168.1.5:5000/v3
        compute: http://192.168.1.5:8774/v2.1
        network: https://network.internal/
        image: http://192.168.1.5:9292
      ports: {network: 9696}
      clients: [10.9.0.0/30]
"""


def spec(body: str = GOOD, name: str = "edge", type: str = "openstack") -> str:
    return HEAD.format(name=name, type=type) + body


def gateway(body: str = GOOD) -> Gateway:
    (cloudlet,) = load_text(spec(body), "s.yaml")
    assert cloudlet.spec.platform.gateway is not None
    return cloudlet.spec.platform.gateway


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_text(text, "s.yaml")
    return info.value.render().splitlines()


def test_a_gateway_loads_and_its_problems_are_located() -> None:
    assert gateway().ports == {"network": 9696}
    bad = """\
      address: "not an address"
      endpoints:
        compute: http://user:pw@192.168.1.5:8774/v2.1
        netwrk: http://192.168.1.5:9696
        network: http://192.168.1.5:9696
        image: ftp://192.168.1.5:9292
        placement: http://192.168.1.6:9696
      ports: {dns: 53, image: 70000}
      clients: [10.9.0.1/30]
"""
    assert problems(spec(bad)) == [
        "s.yaml:10:16: spec.platform.gateway.address: not an IP address or host name: "
        "'not an address'",
        "s.yaml:12:9: spec.platform.gateway.endpoints: the identity endpoint (keystone) "
        "is required",
        "s.yaml:12:18: spec.platform.gateway.endpoints.compute: must not hold credentials"
        " (they live in clouds.yaml)",
        "s.yaml:13:17: spec.platform.gateway.endpoints.netwrk: unknown service type 'netwrk'"
        " (did you mean 'network'?)",
        "s.yaml:15:16: spec.platform.gateway.endpoints.image: must be an http:// or https://"
        " URL, got 'ftp://192.168.1.5:9292'",
        "s.yaml:16:20: spec.platform.gateway.endpoints.placement: port 9696 is already the"
        " gateway's port for 'network' (name another in gateway.ports)",
        "s.yaml:17:20: spec.platform.gateway.ports.dns: no endpoint 'dns'",
        "s.yaml:17:31: spec.platform.gateway.ports.image: port 70000 out of range 1..65535",
        "s.yaml:18:17: spec.platform.gateway.clients[0]: host bits are set in '10.9.0.1/30'"
        " (did you mean '10.9.0.0/30'?)",
    ]


def test_a_gateway_is_openstack_s_or_vsphere_s_and_an_unknown_key_is_refused() -> None:
    (line,) = problems(spec(GOOD.replace("clients:", "client:")))
    assert line == (
        "s.yaml:17:7: spec.platform.gateway: unknown field 'client' (did you mean 'clients'?)"
    )
    on_local = spec(type="local").replace("    cloud: osci-demo\n", "")
    assert (
        "s.yaml:9:7: spec.platform.gateway: gateway applies to platform type openstack or vsphere"
        in problems(on_local)
    )


def test_the_engine_reaches_every_service_and_keystone_on_the_gateway() -> None:
    gw = gateway()
    assert auth_url(gw) == "http://10.9.0.1:5000/v3"
    assert endpoint_overrides(gw) == {
        "compute_endpoint_override": "http://10.9.0.1:8774/v2.1",
        "identity_endpoint_override": "http://10.9.0.1:5000/v3",
        "image_endpoint_override": "http://10.9.0.1:9292",
        "network_endpoint_override": "http://10.9.0.1:9696",  # ports: the URL says 443
    }
    options = gateway_options(gw)
    assert options["auth"] == {"auth_url": "http://10.9.0.1:5000/v3"}  # merged into clouds.yaml's
    assert gateway_options(None) == {}


def test_the_config_has_one_server_per_endpoint_and_nothing_else() -> None:
    text = render_nginx(gateway(), ["edge"], run_dir="/tmp/run")
    assert text.count("server {") == 4 and text.count("proxy_pass ") == 4
    assert [line.strip() for line in text.splitlines() if "listen" in line] == [
        "listen 10.9.0.1:8774;",
        "listen 10.9.0.1:5000;",
        "listen 10.9.0.1:9292;",
        "listen 10.9.0.1:9696;",
    ]
    assert "proxy_pass https://network.internal:443;" in text
    assert "proxy_ssl_name network.internal;" in text  # SNI and verification name upstream
    assert text.count("allow 10.9.0.0/30;") == 4 and text.count("deny all;") == 4
    assert "proxy_set_header Host $http_host;" in text
    assert "pid /tmp/run/nginx.pid;" in text and "daemon off;" in text
    assert "# cloudlets: edge" in text
    open_to_all = render_nginx(gateway(GOOD.replace("      clients: [10.9.0.0/30]\n", "")))
    assert "deny all;" not in open_to_all and "pid /run/cloudlet-gateway/nginx.pid;" in open_to_all


def test_an_ipv6_gateway_is_bracketed() -> None:
    gw = gateway(GOOD.replace("address: 10.9.0.1", 'address: "fd00::1"'))
    assert "listen [fd00::1]:5000;" in render_nginx(gw)
    assert auth_url(gw) == "http://[fd00::1]:5000/v3"


def test_export_gateway_writes_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(spec() + "---\n" + spec(name="edge-2"))
    out = tmp_path / "gw.conf"
    assert main(["export", "gateway", str(site), "-o", str(out), "--run-dir", "/tmp/r"]) == 0
    assert out.read_text() == render_nginx(gateway(), ["edge", "edge-2"], "/tmp/r")
    assert main(["export", "gateway", str(site)]) == 0
    assert capsys.readouterr().out == render_nginx(gateway(), ["edge", "edge-2"])


def test_export_gateway_refuses_a_file_without_one_gateway(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(spec() + "---\n" + spec(GOOD.replace("10.9.0.1", "10.9.0.5"), name="b"))
    assert main(["export", "gateway", str(site)]) == 1
    assert "cloudlets edge and b name different gateways" in capsys.readouterr().err
    plain = tmp_path / "plain.yaml"
    plain.write_text(spec().split("    gateway:")[0])
    assert main(["export", "gateway", str(plain)]) == 1
    assert "no cloudlet has a platform.gateway" in capsys.readouterr().err
    assert main(["export", "heat", str(plain), "--run-dir", "/tmp/x"]) == 1
    assert "--run-dir applies to export gateway only" in capsys.readouterr().err
