"""An operator's disk image may not reach outside the allowed roots through its header
(issue 16 follow-up): a qcow2 under the roots whose header names ``/etc/hostname``
(backing format raw) as its backing file, or an external data file outside them, is
refused for an operator's ``define`` and ``create`` with 403 naming that file; so is
a qcow2 disk whose chain cannot be read. The same image declared raw (or with no
driver type, which libvirt opens as raw) names nothing and is taken; a clean overlay
of an image under the roots is taken; an admin may use the evil image. On a served
app over libvirt's test driver, with real qcow2 files made by qemu-img.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
import pytest

from api_support import Served
from real_support import needs_qemu_img

pytestmark = needs_qemu_img

DEFINE = "/api/hosts/local/define"
NEW = "/api/hosts/local/vms"
XML = {"content-type": "application/xml"}


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


@pytest.fixture
def evil(images: Path) -> Path:
    path = images / "evil.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw",
             str(path), "1M")
    return path


def domain(name: str, disk: Path, fmt: str | None = "qcow2") -> str:
    driver = f"<driver name='qemu' type='{fmt}'/>" if fmt else ""
    return (f"<domain type='test'><name>{name}</name><memory unit='MiB'>64</memory>"
            f"<os><type>hvm</type></os><devices><disk type='file' device='disk'>{driver}"
            f"<source file='{disk}'/><target dev='vda'/></disk></devices></domain>")


def _vms(client: httpx.Client) -> list[str]:
    return sorted(v["name"] for v in client.get("/api/vms").json()["vms"])


def _refused(response: httpx.Response, start: str, *words: str) -> None:
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["code"] == "not_permitted", error
    assert error["message"].startswith(start), error["message"]
    for word in words:
        assert word in error["message"], error["message"]


def test_an_operators_define_of_a_qcow2_backed_by_a_host_file_is_refused(
        api: Served, op: httpx.Client, evil: Path) -> None:
    r = op.post(DEFINE, content=domain("evil", evil), headers=XML)
    _refused(r, "cannot define evil with an operator token",
             f"{evil} has the backing file /etc/hostname, outside the allowed roots",
             "ask an admin")
    assert _vms(op) == ["test"]
    assert op.get("/api/history").json() == []  # refused before any operation
    with api.client() as root:  # an admin may
        r = root.post(DEFINE, content=domain("evil", evil), headers=XML)
        assert r.status_code == 200, r.text
    assert _vms(op) == ["evil", "test"]


def test_an_operators_create_with_a_qcow2_backed_by_a_host_file_is_refused(
        api: Served, op: httpx.Client, evil: Path) -> None:
    r = op.post(NEW, json={"name": "evil", "disks": [str(evil)]})
    _refused(r, "cannot create evil with an operator token",
             f"{evil} has the backing file /etc/hostname, outside the allowed roots")
    assert _vms(op) == ["test"]
    assert op.get("/api/history").json() == []
    with api.client() as root:  # an admin may
        r = root.post(NEW, json={"name": "evil", "disks": [str(evil)]})
        assert r.status_code == 200, r.text
    assert _vms(op) == ["evil", "test"]


def test_an_external_data_file_outside_the_roots_is_refused(op: httpx.Client,
                                                            images: Path) -> None:
    disk = images / "data.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", "data_file=/tmp/virtlife-no-such-data",
             str(disk), "1M")
    _refused(op.post(DEFINE, content=domain("evil", disk), headers=XML),
             "cannot define evil", "external data file /tmp/virtlife-no-such-data")
    _refused(op.post(NEW, json={"name": "evil", "disks": [str(disk)]}),
             "cannot create evil", "external data file /tmp/virtlife-no-such-data")


def test_a_qcow2_whose_chain_cannot_be_read_is_refused(op: httpx.Client,
                                                       images: Path) -> None:
    missing = images / "missing.qcow2"
    _refused(op.post(NEW, json={"name": "gone", "disks": [str(missing)]}),
             "cannot create gone", f"the backing chain of {missing} cannot be read")
    assert _vms(op) == ["test"]


def test_the_evil_file_is_refused_as_qcow2_and_taken_as_raw(op: httpx.Client,
                                                           evil: Path) -> None:
    _refused(op.post(DEFINE, content=domain("evil", evil), headers=XML),
             "cannot define evil", "/etc/hostname")
    for name, fmt in (("asraw", "raw"), ("untyped", None)):  # libvirt opens both as raw
        r = op.post(DEFINE, content=domain(name, evil, fmt), headers=XML)
        assert r.status_code == 200, r.text
    assert _vms(op) == ["asraw", "test", "untyped"]


def test_a_clean_overlay_under_the_roots_is_taken_where_the_evil_one_is_not(
        op: httpx.Client, images: Path, evil: Path) -> None:
    base, top = images / "base.img", images / "top.qcow2"
    qemu_img("create", "-q", "-f", "raw", str(base), "1M")
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", str(top), "1M")
    _refused(op.post(NEW, json={"name": "evil", "disks": [str(top), str(evil)]}),
             "cannot create evil", "devices/disk[2]", "/etc/hostname")
    r = op.post(NEW, json={"name": "clean", "disks": [str(top)]})
    assert r.status_code == 200, r.text
    r = op.post(DEFINE, content=domain("clean2", top), headers=XML)
    assert r.status_code == 200, r.text
    assert _vms(op) == ["clean", "clean2", "test"]


def test_an_operators_restore_of_a_save_whose_vm_uses_the_evil_image_is_refused(
        api: Served, op: httpx.Client, images: Path, evil: Path) -> None:
    """A save file is written by whoever could write the file (a guest into its raw
    disk); here the admin's VM using the evil image is saved, as a crafted one would,
    and then defined again without that disk: the save asks for more than the VM's
    definition has, which is what a crafted one does."""
    image = images / "evil.sav"
    with api.client() as root:
        made = root.post(NEW, json={"name": "evil", "disks": [str(evil)], "start": True})
        assert made.status_code == 200, made.text
        saved = root.post("/api/vms/local/evil/actions/save", json={"path": str(image)})
        assert saved.status_code in (200, 202), saved.text
        if saved.status_code == 202:
            assert api.wait_operation(root, saved.json()["op_id"])["status"] == "ok"
        xml = root.get("/api/vms/local/evil/xml", params={"inactive": True}).text
        plain = re.sub(r"<disk .*?</disk>", "", xml, flags=re.S)
        assert str(evil) not in plain
        again = root.post(DEFINE, content=plain, headers=XML)
        assert again.status_code == 200, again.text
        _refused(op.post("/api/hosts/local/restore", json={"path": str(image)}),
                 f"cannot restore {image} with an operator token",
                 f"{evil} has the backing file /etc/hostname", "Ask an admin")
        assert op.get("/api/vms/local/evil").json()["state"] == "saved"
        back = root.post("/api/hosts/local/restore", json={"path": str(image)})
        assert back.status_code == 200, back.text
        assert op.get("/api/vms/local/evil").json()["state"] == "running"


def test_an_operator_restores_a_save_that_asks_for_no_more_than_its_vm_has(
        api: Served, op: httpx.Client, images: Path, evil: Path) -> None:
    """The admin's VM, its definition reaching the evil image, saved: the operator may
    start that VM, so restoring its own save gives nothing more."""
    image = images / "evil.sav"
    with api.client() as root:
        made = root.post(NEW, json={"name": "evil", "disks": [str(evil)], "start": True})
        assert made.status_code == 200, made.text
        saved = root.post("/api/vms/local/evil/actions/save", json={"path": str(image)})
        assert saved.status_code in (200, 202), saved.text
        if saved.status_code == 202:
            assert api.wait_operation(root, saved.json()["op_id"])["status"] == "ok"
    back = op.post("/api/hosts/local/restore", json={"path": str(image)})
    assert back.status_code == 200, back.text
    assert op.get("/api/vms/local/evil").json()["state"] == "running"


def test_an_operators_restore_of_a_save_asking_for_a_host_file_is_refused(
        api: Served, op: httpx.Client, images: Path, tmp_path: Path) -> None:
    """Not only backing chains: a save whose XML names a host file outside the roots
    (a serial port writing to it) that the VM's definition does not is refused, as
    define refuses it; before, only the chains of the save's disk images were looked at."""
    image, outside = images / "port.sav", tmp_path / "outside.log"
    port = f"<serial type='file'><source path='{outside}'/><target port='0'/></serial>"
    with api.client() as root:
        xml = domain("port", images / "none", fmt=None).replace(
            "<disk type='file' device='disk'><source file='" + str(images / "none")
            + "'/><target dev='vda'/></disk>", port)
        assert root.post(DEFINE, content=xml, headers=XML).status_code == 200
        started = root.post("/api/vms/local/port/actions/start")
        assert started.status_code in (200, 202), started.text
        if started.status_code == 202:
            assert api.wait_operation(root, started.json()["op_id"])["status"] == "ok"
        saved = root.post("/api/vms/local/port/actions/save", json={"path": str(image)})
        assert saved.status_code in (200, 202), saved.text
        if saved.status_code == 202:
            assert api.wait_operation(root, saved.json()["op_id"])["status"] == "ok"
        now = root.get("/api/vms/local/port/xml", params={"inactive": True}).text
        plain = re.sub(r"<(serial|console) .*?</(serial|console)>", "", now, flags=re.S)
        assert root.post(DEFINE, content=plain, headers=XML).status_code == 200
    _refused(op.post("/api/hosts/local/restore", json={"path": str(image)}),
             f"cannot restore {image} with an operator token", str(outside))
