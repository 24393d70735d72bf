"""The OpenStack and vSphere readers of the LB document, on files and stand-in tools.

(The formats themselves come from the real test cloud and vcsim in
``tests/integration/openstack/test_lb_documents.py`` and
``tests/integration/test_vsphere_lb_documents.py``.)"""

import json
import stat
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cloudlet.agent.openstack_source import OpenstackSource
from cloudlet.agent.sources import SourceError
from cloudlet.agent.vsphere_source import VsphereSource
from cloudlet.lb.placement import chunk_items

DOC = '{"listeners":[],"name":"lb/x","version":1,"vrrp":null}' * 9  # > 255 characters


def meta_data(meta):
    body = {"uuid": "u", "name": "x.edge.0", "launch_index": 0}
    return json.dumps({**body, "meta": meta} if meta is not None else body)


def test_config_drive_file_or_mount_point(tmp_path):
    drive = tmp_path / "openstack" / "latest"
    drive.mkdir(parents=True)
    (drive / "meta_data.json").write_text(meta_data({**chunk_items(DOC), "cloudlet.id": "vm/x"}))
    assert OpenstackSource(str(drive / "meta_data.json")).read() == DOC
    assert OpenstackSource(str(tmp_path)).read() == DOC


@pytest.mark.parametrize(
    ("body", "expect"),
    [
        (meta_data(None), None),  # a server without metadata has no "meta"
        (meta_data({"cloudlet.id": "vm/x"}), None),
        (meta_data({"cloudlet.lb": "2", "cloudlet.lb:0": "{"}), SourceError),  # torn
        ("{", SourceError),
        (json.dumps({"meta": []}), SourceError),
    ],
)
def test_what_is_no_document_and_what_is_a_bad_read(tmp_path, body, expect):
    path = tmp_path / "meta_data.json"
    path.write_text(body)
    if expect is SourceError:
        with pytest.raises(SourceError):
            OpenstackSource(str(path)).read()
    else:
        assert OpenstackSource(str(path)).read() is expect


def test_a_missing_drive_is_a_bad_read(tmp_path):
    with pytest.raises(SourceError, match=r"meta_data\.json"):
        OpenstackSource(str(tmp_path)).read()


class _Answers(BaseHTTPRequestHandler):
    status = 200
    body = b""

    def do_GET(self):
        self.send_response(self.status)
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def service():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_metadata_service_url_and_its_failures(service, monkeypatch):
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # never used for the metadata service
    url = f"http://127.0.0.1:{service.server_port}/openstack/latest/meta_data.json"
    _Answers.status, _Answers.body = 200, meta_data(chunk_items(DOC)).encode()
    assert OpenstackSource(url).read() == DOC
    _Answers.status = 500
    with pytest.raises(SourceError, match="HTTP 500"):
        OpenstackSource(url).read()
    with pytest.raises(SourceError):
        OpenstackSource("http://127.0.0.1:9/meta_data.json", timeout=0.5).read()


def rpctool(tmp_path, code, out="", err=""):
    """A stand-in printing what vmware-rpctool prints (value + newline, or the VMX's reply)."""
    script = tmp_path / "rpctool"
    script.write_text(
        f"#!{sys.executable}\nimport sys\n"
        f"assert sys.argv[1:] == ['info-get guestinfo.cloudlet.lb'], sys.argv\n"
        f"sys.stdout.write({out!r}); sys.stderr.write({err!r}); sys.exit({code})\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return VsphereSource((str(script),))


def test_guestinfo_value_no_value_and_failures(tmp_path):
    assert rpctool(tmp_path, 0, DOC + "\n").read() == DOC
    assert rpctool(tmp_path, 1, err="No value found\n").read() is None
    assert rpctool(tmp_path, 0, "\n").read() is None  # emptied (a simulator keeps the key)
    with pytest.raises(SourceError, match="Failed sending message to VMware"):
        rpctool(tmp_path, 1, err="Failed sending message to VMware.\n").read()
    with pytest.raises(SourceError):
        VsphereSource((str(tmp_path / "no-such-tool"),)).read()
