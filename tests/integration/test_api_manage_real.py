"""The management routes on the real stack: a VM created through the API on
qemu:///system (the test guest's kernel and initrd, its own copy of the guest disk),
started by the same request, seen running by libvirt and the API, then its VNC
graphics changed and an ISO hot-plugged and unplugged through the API, and removed.
The VM, its disk and the ISO are removed even when the test fails
(``conftest._remove``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from api_support import Served, served
from real_support import remove_vm
from support import write_iso_stub
from virtlife.lab.guest import GuestImage
from virtlife.lab.spec import guest_disk_path

pytestmark = pytest.mark.integration

URI = "qemu:///system"


@pytest.fixture
def api(real_stack: GuestImage, tmp_path: Path) -> Iterator[Served]:
    with served(tmp_path / "api.db", {"local": URI}) as s:
        yield s


@pytest.fixture
def vm_name() -> Iterator[str]:
    """A fresh VM name; the VM and its disk copy are removed afterwards."""
    name = f"vl-it-api-create-{os.getpid()}"
    remove_vm(name)
    files = (guest_disk_path(name), guest_disk_path(name).with_suffix(".iso"))
    for path in files:
        path.unlink(missing_ok=True)
    try:
        yield name
    finally:
        remove_vm(name)
        for path in files:
            path.unlink(missing_ok=True)


def _virsh(*args: str) -> str:
    return subprocess.run(["virsh", "-q", "-c", URI, *args], capture_output=True, text=True,
                          timeout=60, check=True).stdout.strip()


def test_a_vm_created_and_started_through_the_api_runs(
        api: Served, real_stack: GuestImage, vm_name: str) -> None:
    disk = guest_disk_path(vm_name)
    disk.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(real_stack.disk, disk)
    body = {"name": vm_name, "memory_mib": 192, "vcpus": 1,
            "kernel": str(real_stack.kernel), "initrd": str(real_stack.initrd),
            "cmdline": "console=ttyS0 quiet", "disks": [str(disk)], "user_nic": True,
            "start": True, "wait_s": 60}
    with api.client(timeout_s=120) as c:
        r = c.post("/api/hosts/local/vms", json=body)
        if r.status_code == 202:
            done = api.wait_operation(c, r.json()["op_id"])
            assert done["status"] == "ok", done
        else:
            assert r.status_code == 200, r.text
            assert (r.json()["operation"], r.json()["state"]) == ("start", "running")
        assert _virsh("domstate", vm_name) == "running"
        vm = c.get(f"/api/vms/local/{vm_name}").json()
        assert (vm["state"], vm["memory_mib"]) == ("running", 192)
        history = [(h["operation"], h["outcome"])
                   for h in c.get(f"/api/vms/local/{vm_name}/history").json()]
        assert history == [("start", "ok"), ("define", "ok")]
        # the same name again is refused at once
        again = c.post("/api/hosts/local/vms", json={"name": vm_name})
        assert again.status_code == 409, again.text

        # its VNC server (virtlife's default: 127.0.0.1, autoport) as virsh sees it
        vnc = c.get(f"/api/vms/local/{vm_name}/vnc").json()
        assert f":{vnc['display']}" in _virsh("vncdisplay", vm_name)
        changed = c.put(f"/api/vms/local/{vm_name}/graphics",
                        json={"listen": "127.0.0.1", "password": "pw123456"})
        assert changed.status_code == 200, changed.text
        assert "applies at the next boot" in changed.json()["note"]
        assert "passwd=" in _virsh("dumpxml", "--inactive", "--security-info", vm_name)
        assert c.get(f"/api/vms/local/{vm_name}/graphics").json()["password"] is True

        # an ISO hot-plugged on virtio-scsi and taken away again
        iso = disk.with_suffix(".iso")  # beside the disk: the QEMU user can read it
        write_iso_stub(iso)  # attach-iso reads its ISO 9660 volume descriptor
        attached = c.post(f"/api/vms/local/{vm_name}/media", json={"path": str(iso)})
        assert attached.status_code == 200, attached.text
        [drive] = c.get(f"/api/vms/local/{vm_name}/media").json()
        assert (drive["source"], drive["live"], drive["by_virtlife"]) == (str(iso), True, True)
        detached = c.delete(f"/api/vms/local/{vm_name}/media", params={"path": str(iso)})
        assert detached.status_code == 200, detached.text
        assert c.get(f"/api/vms/local/{vm_name}/media").json() == []

        stopped = c.post(f"/api/vms/local/{vm_name}/actions/destroy")
        assert api.wait_operation(c, stopped.json()["op_id"])["status"] == "ok"
        gone = c.post(f"/api/vms/local/{vm_name}/actions/undefine")
        assert api.wait_operation(c, gone.json()["op_id"])["status"] == "ok"
        assert c.get(f"/api/vms/local/{vm_name}").status_code == 404
