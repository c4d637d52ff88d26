"""What the real-QEMU tests share outside tests/integration/conftest.py: removing a VM
from this machine's libvirt (qemu:///system) whatever state it is in."""

from __future__ import annotations

import os
import shutil

import pytest

URI = "qemu:///system"

# For tests that call qemu-img: they skip where it is missing, except under CI
# (VIRTLIFE_REQUIRE_REAL_STACK=1, where setup installs qemu-utils): there they run, and
# fail without it, as the real-stack tests do.
needs_qemu_img = pytest.mark.skipif(
    shutil.which("qemu-img") is None and os.environ.get("VIRTLIFE_REQUIRE_REAL_STACK") != "1",
    reason="qemu-img (qemu-utils) is not installed")


def remove_vm(name: str) -> None:
    """Destroy and undefine ``name`` on this machine's libvirt; nothing if it is gone."""
    from virtlife.hypervisor import Host

    with Host.open("cleanup", URI, events=False) as host:
        guest = host.find(name)
        if guest is None:
            return
        if guest.status().state.is_active:
            guest.destroy()
        if guest.is_persistent():
            guest.undefine(managed_save=True, snapshots=True)
