"""What the real-QEMU tests share outside tests/integration/conftest.py: removing a VM
from this machine's libvirt (qemu:///system) whatever state it is in."""

from __future__ import annotations

URI = "qemu:///system"


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
