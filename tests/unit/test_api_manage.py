"""The REST API's management routes on a served app over libvirt's test driver: create,
define and restore a VM, add and remove hosts, attach and detach ISOs, build the
driver ISO, show and change VNC graphics, and what each refuses (401, 403, 404, 409,
422) with the CLI's message and nothing changed.

``test:///default`` (one running VM, ``test``) is the main host; the richer node of
``tests/data/node.xml`` gives the states a refusal needs. The test driver has no device
hot-plug: the ISO routes' device changes go to a recorder in ``Guest``'s place (the
server runs in this process). A VNC password must reach no answer, log or store byte.
"""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_support import Served, served
from support import NODE_URI, write_iso_stub
from virtlife.hypervisor import Guest

VM = "/api/vms/local/test"
NEW = "/api/hosts/local/vms"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Served]:
    with served(tmp_path / "s.db", {"local": "test:///default"}, follow_events=False) as s:
        yield s


@pytest.fixture
def client(api: Served) -> Iterator[httpx.Client]:
    with api.client() as c:
        yield c


@pytest.fixture
def node(tmp_path: Path) -> Iterator[httpx.Client]:
    """A served app over the test node (vm-running, vm-off, vm-crashed, vm-pmsusp...)."""
    with served(tmp_path / "n.db", {"local": NODE_URI}, follow_events=False) as s, \
            s.client() as c:
        yield c


def _error(response: httpx.Response) -> dict[str, str]:
    assert response.headers["content-type"] == "application/json", response.text
    body: dict[str, dict[str, str]] = response.json()
    return body["error"]


def _refused(response: httpx.Response, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    assert words in _error(response)["message"], response.text


# Every write route with a body it would accept: for 401 and 403.
WRITES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", NEW, {"name": "x1"}),
    ("POST", "/api/hosts/local/define", None),
    ("POST", "/api/hosts/local/restore", {"path": "/nonexistent.sav"}),
    ("POST", "/api/hosts", {"name": "h9", "uri": "test:///default"}),
    ("DELETE", "/api/hosts/local", None),
    ("POST", f"{VM}/media", {"path": "/x.iso"}),
    ("DELETE", f"{VM}/media?path=/x.iso", None),
    ("POST", "/api/media/windows-drivers-iso", {"drivers": "/d", "out": "/x.iso"}),
    ("PUT", f"{VM}/graphics", {"listen": "0.0.0.0"}),
]
READS = ["/api/vms/local/test/media", f"{VM}/graphics", f"{VM}/vnc"]


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_a_write_needs_a_token_and_a_read_write_one(api: Served, client: httpx.Client,
                                                   method: str, path: str,
                                                   body: dict[str, Any] | None) -> None:
    for token, status in (("", 401), (api.read_only_token, 403)):
        with api.client(token=token) as other:
            response = other.request(method, path, json=body)
            assert response.status_code == status, response.text
    assert client.get("/api/hosts").json()[0]["name"] == "local"  # nothing removed
    assert [v["name"] for v in client.get("/api/vms").json()["vms"]] == ["test"]


@pytest.mark.parametrize("path", READS)
def test_a_read_needs_a_token_and_a_read_only_one_will_do(api: Served, path: str) -> None:
    with api.client(token="") as anonymous:
        assert anonymous.get(path).status_code == 401
    with api.client(token=api.read_only_token) as reader:
        assert reader.get(path).status_code in (200, 404)  # vnc: test has no VNC server


# -- create -------------------------------------------------------------------------------

def test_create_defines_the_vm_and_answers_with_the_result(client: httpx.Client) -> None:
    r = client.post(NEW, json={"name": "web1", "memory_mib": 128, "vcpus": 2,
                               "disks": ["/var/lib/libvirt/images/web1.qcow2"],
                               "networks": ["default"], "user_nic": True})
    assert r.status_code == 200, r.text
    assert (r.json()["vm"], r.json()["operation"], r.json()["state"]) == (
        "web1", "define", "shutoff")
    vm = client.get("/api/vms/local/web1").json()
    assert (vm["vcpus"], vm["memory_mib"], vm["state"]) == (2, 128, "shutoff")
    xml = ET.fromstring(client.get("/api/vms/local/web1/xml").text)
    assert xml.find("devices/disk/source").get("file") == (  # type: ignore[union-attr]
        "/var/lib/libvirt/images/web1.qcow2")
    assert [i.get("type") for i in xml.iterfind("devices/interface")] == ["network", "user"]
    assert xml.find("devices/graphics").get("type") == "vnc"  # type: ignore[union-attr]
    history = client.get("/api/vms/local/web1/history").json()
    assert [(h["operation"], h["outcome"]) for h in history] == [("define", "ok")]


def test_create_with_start_runs_it_and_wait_s_0_answers_202(api: Served,
                                                           client: httpx.Client) -> None:
    r = client.post(NEW, json={"name": "web2", "start": True, "wait_s": 0})
    assert r.status_code == 202, r.text
    done = api.wait_operation(client, r.json()["op_id"])
    assert done["status"] == "ok" and done["result"]["operation"] == "start"
    assert client.get("/api/vms/local/web2").json()["state"] == "running"


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"name": "test"}, 409, "cannot create test: a VM of that name already exists on host "
                            "local"),
    ({"name": "-web"}, 422, "'-web' cannot be a VM name; use letters, digits"),
    ({"name": "web3", "disks": ["web3.qcow2"]}, 422, "disk 'web3.qcow2' is not an "
                                                      "absolute path"),
    ({"name": "web3", "kernel": "vmlinuz"}, 422, "kernel 'vmlinuz' is not an absolute"),
    ({"name": "web3", "memory_mib": 0}, 422, "memory_mib"),
    ({"name": "web3", "vcpus": 5000}, 422, "vcpus"),
    ({"name": "web3", "virt_type": "xen"}, 422, "virt_type"),
    ({"name": "web3", "no_vnc": True}, 422, "no_vnc"),
    ({"name": "web3", "wait_s": 61}, 422, "wait_s"),
])
def test_create_refuses_at_once_with_the_clis_message(client: httpx.Client,
                                                      body: dict[str, Any], status: int,
                                                      words: str) -> None:
    _refused(client.post(NEW, json=body), status, words)
    assert [v["name"] for v in client.get("/api/vms").json()["vms"]] == ["test"]
    assert client.get("/api/history").json() == []


def test_create_on_an_unknown_host_is_404(client: httpx.Client) -> None:
    _refused(client.post("/api/hosts/nowhere/vms", json={"name": "web1"}), 404,
             "no host named nowhere")


# -- define ------------------------------------------------------------------------------

DOMAIN = ("<domain type='test'><name>{name}</name>"
          "<uuid>7a1c0e4e-0000-4000-8000-00000000d001</uuid><memory unit='MiB'>{mib}</memory>"
          "<os><type>hvm</type></os></domain>")


XML = {"content-type": "application/xml"}


def test_define_takes_domain_xml_and_updates_an_existing_definition(
        client: httpx.Client) -> None:
    headers = {"content-type": "application/xml"}
    r = client.post("/api/hosts/local/define", headers=headers,
                    content=DOMAIN.format(name="d1", mib=64))
    assert r.status_code == 200 and r.json()["vm"] == "d1", r.text
    again = client.post("/api/hosts/local/define", headers=headers,
                        content=DOMAIN.format(name="d1", mib=96))
    assert again.status_code == 200, again.text
    assert client.get("/api/vms/local/d1").json()["memory_mib"] == 96


@pytest.mark.parametrize(("content", "status", "words"), [
    (b"not xml", 422, "the domain XML is not well-formed"),
    (b"<domain><memory>1</memory></domain>", 422, "name"),
    (b"\xff\xfe<domain/>", 422, "is not UTF-8 text"),
    (b"<!--" + b"x" * (1024 * 1024) + b"-->", 413,
     "larger than the 1048576 bytes this route takes"),
])
def test_define_refuses_what_is_no_domain_xml(client: httpx.Client, content: bytes,
                                              status: int, words: str) -> None:
    _refused(client.post("/api/hosts/local/define", content=content, headers=XML),
             status, words)
    assert [v["name"] for v in client.get("/api/vms").json()["vms"]] == ["test"]


def test_define_on_an_unknown_host_is_404(client: httpx.Client) -> None:
    _refused(client.post("/api/hosts/elsewhere/define", headers=XML,
                         content=DOMAIN.format(name="d1", mib=64)), 404, "no host named")


# -- restore -----------------------------------------------------------------------------

def test_a_saved_vm_is_restored_and_its_file_refused_while_it_runs(
        api: Served, client: httpx.Client, tmp_path: Path) -> None:
    image = tmp_path / "test.sav"
    saved = client.post(f"{VM}/actions/save", json={"path": str(image)})
    assert api.wait_operation(client, saved.json()["op_id"])["status"] == "ok"
    r = client.post("/api/hosts/local/restore", json={"path": str(image)})
    assert r.status_code == 200, r.text
    assert (r.json()["operation"], r.json()["state"]) == ("restore", "running")
    assert client.get(VM).json()["state"] == "running"


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"path": "/nonexistent/test.sav"}, 404, "cannot restore /nonexistent/test.sav: no "
                                             "such file on host local"),
    ({"path": "test.sav"}, 422, "is not an absolute path"),
    ({"path": "/x.sav", "force": True}, 422, "force"),
    ({"path": "/x.sav", "timeout_s": 0}, 422, "timeout_s"),
])
def test_restore_refusals(client: httpx.Client, body: dict[str, Any], status: int,
                          words: str) -> None:
    _refused(client.post("/api/hosts/local/restore", json=body), status, words)


def test_a_file_that_is_no_save_image_is_422(client: httpx.Client, tmp_path: Path) -> None:
    junk = tmp_path / "junk.sav"
    junk.write_bytes(b"junk" * 100)
    _refused(client.post("/api/hosts/local/restore", json={"path": str(junk)}), 422,
             "it is not a libvirt save image")
    assert junk.exists()


def test_restore_on_an_unknown_host_is_404(client: httpx.Client) -> None:
    _refused(client.post("/api/hosts/nowhere/restore", json={"path": "/x.sav"}), 404,
             "no host named nowhere")


# -- hosts -------------------------------------------------------------------------------

def test_a_host_is_added_checked_and_removed(client: httpx.Client) -> None:
    r = client.post("/api/hosts", json={"name": "hv2", "uri": "test:///default"})
    assert r.status_code == 201, r.text
    assert (r.json()["reachable"], r.json()["info"]["hypervisor"]) == (True, "TEST")
    down = client.post("/api/hosts", json={"name": "hv3", "uri": "qemu+tcp://127.0.0.1:1/system"})
    assert down.status_code == 201 and down.json()["reachable"] is False
    assert "hv3" in down.json()["problem"]
    assert [h["name"] for h in client.get("/api/hosts").json()] == ["hv2", "hv3", "local"]
    assert client.get("/api/vms", params={"host": "hv2"}).status_code == 200
    gone = client.delete("/api/hosts/hv3")
    assert gone.status_code == 200 and gone.json()["uri"] == "qemu+tcp://127.0.0.1:1/system"
    assert [h["name"] for h in client.get("/api/hosts").json()] == ["hv2", "local"]


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"name": "local", "uri": "test:///default"}, 409, "host local already exists"),
    ({"name": "-x", "uri": "test:///default"}, 422, "invalid host name '-x'"),
    ({"name": "hv2", "uri": "no uri"}, 422, "invalid libvirt URI 'no uri'"),
    ({"name": "hv2"}, 422, "uri"),
    ({"name": "hv2", "uri": "test:///default", "x": 1}, 422, "x"),
])
def test_host_add_refusals(client: httpx.Client, body: dict[str, Any], status: int,
                           words: str) -> None:
    _refused(client.post("/api/hosts", json=body), status, words)
    assert [h["name"] for h in client.get("/api/hosts").json()] == ["local"]


def test_removing_an_unknown_host_is_404(client: httpx.Client) -> None:
    _refused(client.delete("/api/hosts/hv9"), 404, "no host named hv9 in the inventory")


# -- media --------------------------------------------------------------------------------

@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, bool, bool]]:
    """The test driver has no hot-plug: device changes are recorded instead."""
    made: list[tuple[str, str, bool, bool]] = []

    def recorder(kind: str) -> Any:
        def record(_guest: Guest, xml: str, *, live: bool, config: bool) -> None:
            made.append((kind, ET.fromstring(xml).tag, live, config))
        return record

    monkeypatch.setattr(Guest, "attach_device", recorder("attach"))
    monkeypatch.setattr(Guest, "detach_device", recorder("detach"))
    return made


def test_an_iso_is_attached_and_detached(node: httpx.Client, tmp_path: Path,
                                         recorded: list[tuple[str, str, bool, bool]]) -> None:
    iso = write_iso_stub(tmp_path / "debian.iso")
    r = node.post("/api/vms/local/vm-off/media", json={"path": str(iso), "bus": "sata"})
    assert r.status_code == 200, r.text
    assert r.json()["operation"] == "attach-iso"
    assert r.json()["note"].startswith(f"{iso} is SATA CD-ROM sd")
    assert recorded == [("attach", "disk", False, True)]
    assert node.get("/api/vms/local/vm-off/media").json() == []  # recorded, not made
    d = node.delete("/api/vms/local/vm-off/media", params={"path": str(iso)})
    _refused(d, 404, f"vm-off has no CD-ROM holding {iso}")


def test_the_cdroms_of_a_vm_are_listed(node: httpx.Client) -> None:
    disk = ("<disk type='file' device='cdrom'><source file='/isos/a.iso'/>"
            "<target dev='sdc' bus='sata'/><alias name='ua-virtlife-iso-0'/></disk>")
    xml = ("<domain type='test'><name>cd1</name><memory unit='MiB'>64</memory>"
           f"<os><type>hvm</type></os><devices>{disk}</devices></domain>")
    assert node.post("/api/hosts/local/define", content=xml, headers=XML).status_code == 200
    assert node.get("/api/vms/local/cd1/media").json() == [
        {"target": "sdc", "bus": "sata", "source": "/isos/a.iso", "by_virtlife": True,
         "live": False, "defined": True}]


@pytest.mark.parametrize(("method", "vm", "body", "status", "words"), [
    ("POST", "vm-crashed", {"path": "/x.iso"}, 409, "cannot attach-iso vm-crashed: it is "
                                                   "crashed"),
    ("POST", "vm-running", {"path": "/x.iso", "bus": "sata"}, 409,
     "a SATA CD-ROM cannot be hot-plugged"),
    ("POST", "vm-off", {"path": "/nonexistent.iso"}, 404, "cannot attach /nonexistent.iso "
                                                         "to vm-off: there is no such file"),
    ("POST", "vm-off", {"path": "x.iso"}, 422, "is not an absolute path"),
    ("POST", "vm-off", {"path": "/x.iso", "bus": "floppy"}, 422, "bus"),
    ("POST", "nothere", {"path": "/x.iso"}, 404, "nothere"),
    ("DELETE", "vm-pmsusp", None, 409, "cannot detach-iso vm-pmsusp"),
    ("DELETE", "nothere", None, 404, "nothere"),
])
def test_iso_refusals(node: httpx.Client, tmp_path: Path, method: str, vm: str,
                      body: dict[str, Any] | None, status: int, words: str) -> None:
    if body and body["path"] == "/x.iso":
        iso = tmp_path / "x.iso"
        iso.write_bytes(b"\0" * 4096)
        body = {**body, "path": str(iso)}
    params = {"path": str(tmp_path / "x.iso")} if method == "DELETE" else None
    _refused(node.request(method, f"/api/vms/local/{vm}/media", json=body, params=params),
             status, words)


def test_the_driver_iso_is_built_on_the_servers_machine(client: httpx.Client,
                                                        tmp_path: Path) -> None:
    drivers = tmp_path / "drivers"
    for part in ("NetKVM/w10/amd64/netkvm.inf", "viostor/w10/amd64/viostor.inf"):
        (drivers / part).parent.mkdir(parents=True, exist_ok=True)
        (drivers / part).write_text(part)
    out = tmp_path / "virtio-win.iso"
    r = client.post("/api/media/windows-drivers-iso",
                    json={"drivers": str(drivers), "out": str(out)})
    assert r.status_code == 200, r.text
    assert out.is_file() and r.json()["path"] == str(out)
    assert any("vioserial" in w for w in r.json()["warnings"])  # missing: said, not fatal
    again = client.post("/api/media/windows-drivers-iso",
                        json={"drivers": str(drivers), "out": str(out)})
    _refused(again, 409, "exists; pass --force to replace it")
    forced = client.post("/api/media/windows-drivers-iso",
                         json={"drivers": str(drivers), "out": str(out), "force": True})
    assert forced.status_code == 200, forced.text


@pytest.mark.parametrize(("body", "words"), [
    ({"drivers": "drivers", "out": "/tmp/v.iso"}, "is not an absolute path"),
    ({"drivers": "/nonexistent", "out": "/tmp/v.iso"}, "there is no /nonexistent"),
    ({"drivers": "/tmp", "out": "/tmp/v.img"}, "does not end in .iso"),
    ({"drivers": "/tmp", "out": "/tmp/v.iso", "label": "a b"}, "cannot be a volume label"),
])
def test_driver_iso_refusals(client: httpx.Client, body: dict[str, str], words: str) -> None:
    _refused(client.post("/api/media/windows-drivers-iso", json=body), 422, words)


# -- graphics -----------------------------------------------------------------------------

SECRET = "Zq7!pw8x"


def test_graphics_are_shown_and_changed_and_the_password_never_leaks(
        api: Served, client: httpx.Client, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assert client.get(f"{VM}/graphics").json() == {
        "host": "local", "vm": "test", "vnc": False, "listen": "", "port": None,
        "password": False}
    changed = client.put(f"{VM}/graphics", json={"listen": "0.0.0.0", "password": SECRET})
    assert changed.status_code == 200, changed.text
    assert changed.json()["note"].startswith("VNC graphics added, VNC listens on 0.0.0.0, "
                                             "VNC password set; it applies at the next boot")
    shown = client.get(f"{VM}/graphics")
    assert shown.json() == {"host": "local", "vm": "test", "vnc": True, "listen": "0.0.0.0",
                            "port": None, "password": True}
    refusals = [client.put(f"{VM}/graphics", json={"password": SECRET + "9"}),
                client.put(f"{VM}/graphics", json={"password": SECRET, "remove_password": True}),
                client.put(f"{VM}/graphics", json={"password": SECRET, "x": SECRET})]
    assert [r.status_code for r in refusals] == [422, 422, 422]
    cleared = client.put(f"{VM}/graphics", json={"remove_password": True})
    assert cleared.status_code == 200 and "no VNC password" in cleared.json()["note"]
    assert client.get(f"{VM}/graphics").json()["password"] is False
    op = client.get(f"/api/operations/{changed.json()['op_id']}").text
    seen = [changed.text, shown.text, op, client.get(f"{VM}/history").text,
            client.get("/api/history").text, caplog.text, *[r.text for r in refusals]]
    for text in seen:
        assert SECRET not in text
    store = b"".join(p.read_bytes() for p in tmp_path.glob("s.db*"))
    assert SECRET.encode() not in store


@pytest.mark.parametrize(("body", "status", "words"), [
    ({}, 422, "nothing to change"),
    ({"listen": "example.org"}, 422, "'example.org' is not an IP address"),
    ({"password": "123456789"}, 422, "VNC uses at most 8"),
    ({"listen": "0.0.0.0", "wait_s": -1}, 422, "wait_s"),
])
def test_graphics_refusals(client: httpx.Client, body: dict[str, Any], status: int,
                           words: str) -> None:
    _refused(client.put(f"{VM}/graphics", json=body), status, words)
    assert client.get(f"{VM}/history").json() == []


def test_graphics_and_vnc_of_an_unknown_vm_are_404(client: httpx.Client) -> None:
    for r in (client.get("/api/vms/local/nope/graphics"), client.get("/api/vms/local/nope/vnc"),
              client.put("/api/vms/local/nope/graphics", json={"listen": "127.0.0.1"})):
        _refused(r, 404, "nope")


def test_vnc_of_a_vm_without_a_vnc_server_says_how_to_add_one(client: httpx.Client) -> None:
    r = client.get(f"{VM}/vnc")
    _refused(r, 404, "it has no VNC graphics; add them with `virtlife graphics test")
    assert json.loads(r.text)["error"]["code"] == "not_found"


@pytest.mark.parametrize("field", ["path", "drivers", "out"])
def test_a_path_field_with_a_control_character_is_refused_before_anything_runs(
        node: httpx.Client, tmp_path: Path, field: str,
        recorded: list[tuple[str, str, bool, bool]]) -> None:
    work = tmp_path / "work"
    work.mkdir()
    bad = str(work / "a\nb.iso")
    if field == "path":
        r = node.post("/api/vms/local/vm-off/media", json={"path": bad})
    else:
        body = {"drivers": str(work), "out": str(work / "o.iso"), field: bad}
        r = node.post("/api/media/windows-drivers-iso", json=body)
    _refused(r, 422, "holds a control character")
    assert recorded == [] and sorted(work.iterdir()) == []
