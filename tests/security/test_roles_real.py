"""Roles on the real stack (issue 16): a served app over qemu:///system and the test
guest, with the real roles' tokens.

- A reader's ``viewer.vv`` for a VM with a VNC password has no ``password=`` line; an
  operator's has it.
- An operator's ``save`` outside the allowed roots, or to a relative path, is refused
  and the VM keeps running; under the roots it saves and restores.
- An operator re-defines a VM from libvirt's own XML of it (the host's emulator, its
  disk under the images directory, the guest's kernel under a root that
  ``settings.toml`` adds); the same XML with ``<qemu:commandline>`` or a ``/dev/sda``
  disk is refused naming them, and an admin defines it.

The VMs, their disks and save files are removed even when a test fails.
"""

from __future__ import annotations

import configparser
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from api_support import Served, served
from real_support import remove_vm
from virtlife import config
from virtlife.lab.guest import GuestImage
from virtlife.lab.spec import guest_disk_path

pytestmark = pytest.mark.integration

URI = "qemu:///system"
PASSWORD = "Vv7pw8xq"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
XML = {"content-type": "application/xml"}  # define takes nothing else


@pytest.fixture
def guest_root(real_stack: GuestImage, isolated_home: Path) -> None:
    """settings.toml adds the test guest's directory (its kernel, initrd) as a root."""
    isolated_home.mkdir(parents=True, exist_ok=True)
    (isolated_home / "settings.toml").write_text(
        f'[paths]\nallowed_roots = ["{real_stack.kernel.parent}"]\n')


@pytest.fixture
def api(real_stack: GuestImage, tmp_path: Path) -> Iterator[Served]:
    with served(tmp_path / "api.db", {"local": URI}) as s:
        yield s


@pytest.fixture
def vm(api: Served, real_stack: GuestImage, request: pytest.FixtureRequest) -> Iterator[str]:
    """A shut-off test-guest VM made by the admin, with a VNC password; it, its disk
    and its save file are removed afterwards."""
    name = f"vl-sec-{request.node.name.removeprefix('test_')[:20]}-{os.getpid()}"
    disk = guest_disk_path(name)
    leftovers = [disk, config.images_dir() / f"{name}.sav"]
    remove_vm(name)
    try:
        disk.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(real_stack.disk, disk)
        body = {"name": name, "memory_mib": 192, "kernel": str(real_stack.kernel),
                "initrd": str(real_stack.initrd), "cmdline": "console=ttyS0 quiet",
                "disks": [str(disk)], "user_nic": True}
        with api.client(timeout_s=120) as root:
            made = root.post("/api/hosts/local/vms", json=body)
            assert made.status_code == 200, made.text
            graphics = root.put(f"/api/vms/local/{name}/graphics",
                                json={"password": PASSWORD})
            assert graphics.status_code == 200, graphics.text
        yield name
    finally:
        remove_vm(name)
        for path in leftovers:
            path.unlink(missing_ok=True)


def _start(api: Served, name: str) -> None:
    with api.client(timeout_s=120) as root:
        started = root.post(f"/api/vms/local/{name}/actions/start")
        assert started.status_code == 202, started.text
        assert api.wait_operation(root, started.json()["op_id"])["status"] == "ok"


def _viewer(api: Served, token: str, name: str) -> configparser.SectionProxy:
    with api.client(token=token) as client:
        response = client.get(f"/api/vms/local/{name}/viewer.vv")
    assert response.status_code == 200, response.text
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(response.text)
    return parser["virt-viewer"]


def test_a_readers_viewer_file_has_no_vnc_password(api: Served, vm: str) -> None:
    _start(api, vm)
    seen = _viewer(api, api.read_only_token, vm)
    assert "password" not in seen and int(seen["port"]) >= 5900
    with api.client(token=api.read_only_token) as reader:
        assert PASSWORD not in reader.get(f"/api/vms/local/{vm}/xml").text
        assert reader.get(f"/api/vms/local/{vm}/graphics").json()["password"] is True
    assert _viewer(api, api.operator_token, vm)["password"] == PASSWORD


def test_an_operators_save_stays_under_the_roots(api: Served, vm: str,
                                                 tmp_path: Path) -> None:
    _start(api, vm)
    ref = f"/api/vms/local/{vm}"
    with api.client(token=api.operator_token, timeout_s=120) as op:
        for path, status in ((str(tmp_path / "outside.sav"), 403), ("/etc/evil.sav", 403),
                             (f"{config.images_dir()}/../evil.sav", 403),
                             (f"{vm}.sav", 422)):
            r = op.post(f"{ref}/actions/save", json={"path": path})
            assert r.status_code == status, (path, r.text)
            assert op.get(ref).json()["state"] == "running"
        assert not (tmp_path / "outside.sav").exists()
        assert not (config.images_dir().parent / "evil.sav").exists()
        image = config.images_dir() / f"{vm}.sav"
        saved = op.post(f"{ref}/actions/save", json={"path": str(image)})
        assert saved.status_code == 202, saved.text
        assert api.wait_operation(op, saved.json()["op_id"])["status"] == "ok"
        assert op.get(ref).json()["state"] == "saved"
        back = op.post("/api/hosts/local/restore", json={"path": str(image), "wait_s": 60})
        assert back.status_code == 200, back.text
        assert op.get(ref).json()["state"] == "running"
        outside = op.post("/api/hosts/local/restore", json={"path": "/etc/shadow"})
        assert outside.status_code == 403, outside.text


def test_an_operator_redefines_libvirts_own_xml_but_not_what_reaches_the_host(
        guest_root: None, api: Served, vm: str) -> None:
    with api.client(token=api.operator_token, timeout_s=60) as op:
        xml = op.get(f"/api/vms/local/{vm}/xml", params={"inactive": True}).text
        assert "<emulator>" in xml
        again = op.post("/api/hosts/local/define", content=xml, headers=XML)
        assert again.status_code == 200, again.text
        evil = xml.replace("<domain type=", f"<domain xmlns:qemu='{QEMU_NS}' type=", 1)
        evil = evil.replace("</devices>", "</devices><qemu:commandline><qemu:arg "
                            "value='-drive'/><qemu:arg value='file=/etc/shadow,if=virtio,"
                            "format=raw'/></qemu:commandline>", 1)
        refused = op.post("/api/hosts/local/define", content=evil, headers=XML)
        assert refused.status_code == 403, refused.text
        assert "qemu:commandline" in refused.json()["error"]["message"]
        raw = xml.replace("</devices>", "<disk type='block' device='disk'><source "
                          "dev='/dev/sda'/><target dev='vdz' bus='virtio'/></disk>"
                          "</devices>", 1)
        refused = op.post("/api/hosts/local/define", content=raw, headers=XML)
        assert refused.status_code == 403, refused.text
        assert "a host device (/dev/sda)" in refused.json()["error"]["message"]
        assert "qemu:commandline" not in op.get(f"/api/vms/local/{vm}/xml",
                                                params={"inactive": True}).text
    with api.client(timeout_s=60) as root:  # an admin may
        done = root.post("/api/hosts/local/define", content=evil, headers=XML)
        assert done.status_code == 200, done.text
        defined = root.get(f"/api/vms/local/{vm}/xml", params={"inactive": True}).text
        assert "qemu:commandline" in defined
