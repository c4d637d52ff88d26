"""An operator's disk image may not reach outside the allowed roots through its header,
on the real stack (issue 16 follow-up): a served app over qemu:///system and the test
guest. An operator's create with a qcow2 under the images directory whose header
names a file outside the roots (backing format raw) is refused and nothing is
defined; a clean
qcow2 overlay of a copy of the guest's disk, both under the images directory, is
created and started. The VMs and the image files are removed even when a test fails.

The host file is a temporary one, not /etc/hostname: libvirt's DAC driver gives a
backing file to the QEMU user when a VM starts and does not give it back (seen here on
the code before the fix: /etc/hostname was left owned by libvirt-qemu).
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
from virtlife import config
from virtlife.lab.guest import GuestImage

pytestmark = pytest.mark.integration

URI = "qemu:///system"
NEW = "/api/hosts/local/vms"


@pytest.fixture
def api(real_stack: GuestImage, isolated_home: Path, tmp_path: Path) -> Iterator[Served]:
    isolated_home.mkdir(parents=True, exist_ok=True)  # the guest's kernel is a root
    (isolated_home / "settings.toml").write_text(
        f'[paths]\nallowed_roots = ["{real_stack.kernel.parent}"]\n')
    with served(tmp_path / "api.db", {"local": URI}) as s:
        yield s


@pytest.fixture
def name() -> Iterator[str]:
    vm = f"vl-sec-backing-{os.getpid()}"
    files = [config.images_dir() / f"{vm}{end}" for end in
             (".qcow2", "-base.qcow2", "-evil.qcow2")]
    remove_vm(vm)
    try:
        yield vm
    finally:
        remove_vm(vm)
        for path in files:
            path.unlink(missing_ok=True)


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def test_an_operators_evil_qcow2_is_refused_and_a_clean_overlay_runs(
        api: Served, real_stack: GuestImage, name: str, tmp_path: Path) -> None:
    images = config.images_dir()
    images.mkdir(parents=True, exist_ok=True)
    base, top = images / f"{name}-base.qcow2", images / f"{name}.qcow2"
    evil = images / f"{name}-evil.qcow2"
    shutil.copyfile(real_stack.disk, base)
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(top))
    secret = tmp_path / "host-secret"
    secret.write_text("not the guest's\n")
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(secret), "-F", "raw", str(evil), "1M")
    body = {"name": name, "memory_mib": 192, "kernel": str(real_stack.kernel),
            "initrd": str(real_stack.initrd), "cmdline": "console=ttyS0 quiet",
            "user_nic": True, "start": True}
    with api.client(token=api.operator_token, timeout_s=120) as op:
        refused = op.post(NEW, json={**body, "disks": [str(top), str(evil)]})
        assert refused.status_code == 403, refused.text
        assert f"{evil} has the backing file {secret}" in refused.text
        assert op.get(f"/api/vms/local/{name}").status_code == 404
        made = op.post(NEW, json={**body, "disks": [str(top)]})
        assert made.status_code == 200, made.text
        assert op.get(f"/api/vms/local/{name}").json()["state"] == "running"
