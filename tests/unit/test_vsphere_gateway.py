"""platform.gateway on vSphere: its validation (file:line:col), the stream (TLS passthrough)
renderer, ``cloudlet export gateway`` for a vSphere site, and the provider dialling the gateway
while verifying vCenter's name. nginx itself runs the rendered file in front of vcsim in
tests/integration/test_vsphere_gateway_e2e.py."""

from __future__ import annotations

import ssl
from pathlib import Path

import attrs
import pytest

from cloudlet.cmd.main import main
from cloudlet.errors import ProviderError, SpecError
from cloudlet.model.load import load_text
from cloudlet.model.spec import Gateway, Platform
from cloudlet.providers.passthrough import render_stream
from cloudlet.providers.vsphere.config import load_config
from cloudlet.providers.vsphere.connection import _NamedContext, _target

HEAD = """\
apiVersion: cloudlet/v1
kind: Cloudlet
metadata: {{name: {name}}}
spec:
  platform:
    type: vsphere
    datacenter: DC0
    cluster: DC0_C0
    datastore: LocalDS_0
    network: DC0_DVPG0
    template: DC0_H0_VM0
    gateway:
"""
GOOD = """\
      address: 10.9.0.1
      endpoints:
        sdk: https://vc.internal/sdk
      clients: [10.9.0.0/30]
"""
CREDENTIALS = {"VSPHERE_USER": "u", "VSPHERE_PASSWORD": "hunter2"}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The credentials, and an empty config file (not the home directory's)."""
    empty = tmp_path / "vsphere.yaml"
    empty.write_text("")
    return {**CREDENTIALS, "VSPHERE_CONFIG": str(empty)}


def spec(body: str = GOOD, name: str = "edge") -> str:
    return HEAD.format(name=name) + body


def platform(body: str = GOOD) -> Platform:
    (cloudlet,) = load_text(spec(body), "s.yaml")
    return cloudlet.spec.platform


def gateway(body: str = GOOD) -> Gateway:
    gw = platform(body).gateway
    assert gw is not None
    return gw


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_text(text, "s.yaml")
    return info.value.render().splitlines()


def test_a_vsphere_gateway_loads_and_what_cannot_work_is_located() -> None:
    assert gateway().endpoints == {"sdk": "https://vc.internal/sdk"}
    openstack_s = """\
      address: 10.9.0.1
      endpoints:
        identity: http://192.168.1.5:5000/v3
        sdx: https://vc.internal/sdk
      ports: {sdk: 0}
"""
    assert problems(spec(openstack_s)) == [
        "s.yaml:15:9: spec.platform.gateway.endpoints: the sdk endpoint"
        " (vCenter's https://HOST/sdk) is required",
        "s.yaml:15:19: spec.platform.gateway.endpoints.identity: unknown service type"
        " 'identity' for platform type vsphere (it is openstack's)",
        "s.yaml:16:14: spec.platform.gateway.endpoints.sdx: unknown service type 'sdx'"
        " (did you mean 'sdk'?)",
        "s.yaml:17:20: spec.platform.gateway.ports.sdk: no endpoint 'sdk' (did you mean 'sdx'?)",
    ]
    bad_url = GOOD.replace("https://vc.internal/sdk", "https://root:pw@vc.internal/sdk?x=1")
    assert problems(spec(bad_url)) == [
        "s.yaml:15:14: spec.platform.gateway.endpoints.sdk: must not hold credentials"
        " (they live in clouds.yaml)"
    ]


def test_the_sdk_endpoint_is_vsphere_s_only() -> None:
    on_openstack = """\
apiVersion: cloudlet/v1
kind: Cloudlet
metadata: {name: edge}
spec:
  platform:
    type: openstack
    cloud: c
    externalNetwork: public
    gateway:
      address: 10.9.0.1
      endpoints: {identity: "http://10.0.0.5:5000/v3", sdk: "https://vc/sdk"}
"""
    assert problems(on_openstack) == [
        "s.yaml:11:61: spec.platform.gateway.endpoints.sdk: unknown service type 'sdk'"
        " for platform type openstack (it is vsphere's)"
    ]


def test_the_config_passes_tls_through_to_vcenter_and_nothing_else() -> None:
    text = render_stream(gateway(), ["edge"], run_dir="/tmp/run")
    lines = [line.strip() for line in text.splitlines()]
    assert lines[3] == "load_module modules/ngx_stream_module.so;"
    assert "stream {" in lines and "http {" not in lines  # no HTTP proxy: nothing terminated
    assert text.count("server {") == 1
    assert [line for line in lines if line.startswith(("listen", "proxy_pass"))] == [
        "listen 10.9.0.1:443;",
        "proxy_pass vc.internal:443;",
    ]
    assert "ssl_preread on;  # the SNI, for the log only" in lines
    assert "443 sdk;" in lines  # the service, by port, for the log
    assert lines.index("allow 10.9.0.0/30;") + 1 == lines.index("deny all;")
    assert "proxy_timeout 20m;" in lines  # past pyVmomi's 15-minute idle pool
    assert "pid /tmp/run/nginx.pid;" in lines and "daemon off;" in lines
    assert "ssl_certificate" not in text and "proxy_ssl" not in text


def test_ports_ipv6_plain_http_and_a_built_in_stream_module() -> None:
    body = """\
      address: "fd00::1"
      endpoints: {sdk: "http://[fd00::5]:8989/sdk"}
      ports: {sdk: 9443}
"""
    text = render_stream(gateway(body), stream_module=None)
    assert "load_module" not in text and "deny all;" not in text
    assert "listen [fd00::1]:9443;" in text and "proxy_pass [fd00::5]:8989;" in text
    assert "ssl_preread on;" not in text  # plain HTTP has no ClientHello to read
    assert "pid /run/cloudlet-gateway/nginx.pid;" in text


def test_export_gateway_renders_a_vsphere_site(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(spec() + "---\n" + spec(name="edge-2"))
    out = tmp_path / "gw.conf"
    argv = ["export", "gateway", str(site), "-o", str(out), "--run-dir", "/tmp/r"]
    assert main(argv) == 0
    assert out.read_text() == render_stream(gateway(), ["edge", "edge-2"], "/tmp/r")
    assert main(["export", "gateway", str(site), "--stream-module", "none"]) == 0
    assert capsys.readouterr().out == render_stream(
        gateway(), ["edge", "edge-2"], stream_module=None
    )
    assert main(["export", "gateway", str(site), "--stream-module", "/x/stream.so"]) == 0
    assert "load_module /x/stream.so;" in capsys.readouterr().out


def test_export_gateway_flags_that_do_not_apply_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    openstack = tmp_path / "os.yaml"
    openstack.write_text(
        spec(name="a").replace("type: vsphere", "type: openstack\n    cloud: c\n    ")
    )
    mixed = tmp_path / "mixed.yaml"
    os_spec = (
        "apiVersion: cloudlet/v1\nkind: Cloudlet\nmetadata: {name: b}\nspec:\n  platform:\n"
        "    type: openstack\n    cloud: c\n    externalNetwork: public\n    gateway:\n"
        "      address: 10.9.0.1\n      endpoints: {identity: 'http://10.0.0.5:5000/v3'}\n"
    )
    mixed.write_text(spec() + "---\n" + os_spec)
    assert main(["export", "gateway", str(mixed)]) == 1
    assert "cloudlets edge and b name different gateways" in capsys.readouterr().err
    only_os = tmp_path / "only-os.yaml"
    only_os.write_text(os_spec)
    assert main(["export", "gateway", str(only_os), "--stream-module", "none"]) == 1
    err = capsys.readouterr().err
    assert "--stream-module applies to a vsphere platform's gateway only" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["export", "heat", str(only_os), "--stream-module", "none"]) == 1
    assert "--stream-module applies to export gateway only" in capsys.readouterr().err


def test_the_provider_dials_the_gateway_and_verifies_vcenter(env: dict[str, str]) -> None:
    endpoint = load_config(platform(), env).endpoint  # no VSPHERE_HOST: the sdk endpoint
    assert (endpoint.host, endpoint.port, endpoint.protocol, endpoint.path) == (
        "vc.internal",
        443,
        "https",
        "/sdk",
    )
    assert endpoint.via == ("10.9.0.1", 443)
    host, port, options, where = _target(endpoint)
    assert (host, port, where) == ("10.9.0.1", 443, "vc.internal:443 via the gateway 10.9.0.1:443")
    context = options["sslContext"]
    assert isinstance(context, _NamedContext) and context.server_name == "vc.internal"
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert "disableSslCertValidation" not in options


def test_insecure_and_a_ca_file_keep_working_through_the_gateway(
    tmp_path: Path, env: dict[str, str]
) -> None:
    lax = load_config(platform(), {**env, "VSPHERE_INSECURE": "1"}).endpoint
    (context,) = _target(lax)[2].values()
    assert context.server_name == "vc.internal"  # the SNI is still vCenter's
    assert not context.check_hostname and context.verify_mode == ssl.CERT_NONE
    missing = load_config(platform(), {**env, "VSPHERE_CA_FILE": str(tmp_path / "no.pem")})
    with pytest.raises(FileNotFoundError):
        _target(missing.endpoint)  # the CA file is read, as without a gateway
    plain = platform(GOOD.replace("https://vc.internal/sdk", "http://127.0.0.1:8989/sdk"))
    assert _target(load_config(plain, env).endpoint)[:3] == ("10.9.0.1", 8989, {})


def test_a_vsphere_host_naming_another_vcenter_is_refused(env: dict[str, str]) -> None:
    agreeing = {**env, "VSPHERE_HOST": "vc.internal"}
    assert load_config(platform(), agreeing).endpoint.via == ("10.9.0.1", 443)
    with pytest.raises(ProviderError) as caught:
        load_config(platform(), {**env, "VSPHERE_HOST": "https://vc.other:8443/sdk"})
    assert not caught.value.transient
    assert str(caught.value) == (
        "vsphere: the vCenter host (VSPHERE_HOST or the config file's host) is"
        " https://vc.other:8443/sdk but the spec's platform.gateway.endpoints.sdk is"
        " https://vc.internal/sdk: with a gateway vCenter's address is the sdk endpoint"
        " (leave the host unset, or make them agree)"
    )
    direct = attrs.evolve(platform(), gateway=None)
    with pytest.raises(ProviderError, match="no vCenter host: set VSPHERE_HOST"):
        load_config(direct, env)  # without a gateway the host is still required
