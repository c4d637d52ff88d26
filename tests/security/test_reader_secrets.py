"""A reader sees everything but secrets (issue 16): the remote-viewer file of a VM with
a VNC password carries ``password=...`` for an operator or admin, never for a reader,
and no other answer a reader gets holds the password. On a served app over libvirt's
test driver, with the real roles' tokens."""

from __future__ import annotations

import configparser
from collections.abc import Iterator
from pathlib import Path

import pytest

from api_support import Served, served
from support import NODE_URI

SECRET = "Rd9pw4zx"
VNC_VM = ("<domain type='test'><name>vv1</name><memory unit='MiB'>64</memory>"
          "<os><type>hvm</type></os><devices><graphics type='vnc' port='5911' "
          f"autoport='no' listen='127.0.0.1' passwd='{SECRET}'>"
          "<listen type='address' address='127.0.0.1'/></graphics></devices></domain>")
VV = "/api/vms/local/vv1/viewer.vv"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Served]:
    with served(tmp_path / "s.db", {"local": NODE_URI}, follow_events=False) as s:
        lifecycle = s.app.state.services.lifecycle
        lifecycle.define(VNC_VM, host="local")
        lifecycle.start("local/vv1")
        yield s


def _viewer(api: Served, token: str) -> configparser.SectionProxy:
    with api.client(token=token) as client:
        response = client.get(VV)
    assert response.status_code == 200, response.text
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(response.text)
    return parser["virt-viewer"]


def test_a_readers_viewer_file_has_no_password(api: Served) -> None:
    seen = _viewer(api, api.read_only_token)
    assert "password" not in seen
    assert (seen["type"], seen["port"]) == ("vnc", "5911")


@pytest.mark.parametrize("who", ["operator", "admin"])
def test_an_operators_and_an_admins_viewer_file_has_it(api: Served, who: str) -> None:
    token = api.operator_token if who == "operator" else api.token
    assert _viewer(api, token)["password"] == SECRET


def test_no_answer_a_reader_gets_holds_the_password(api: Served) -> None:
    with api.client(token=api.read_only_token) as reader:
        for path in ("/api/vms/local/vv1", "/api/vms/local/vv1/xml",
                     "/api/vms/local/vv1/xml?inactive=true", "/api/vms/local/vv1/graphics",
                     "/api/vms/local/vv1/vnc", "/api/vms", VV, "/api/history"):
            response = reader.get(path)
            assert response.status_code == 200, (path, response.text)
            assert SECRET not in response.text, path
