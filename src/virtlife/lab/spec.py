"""A ``DomainSpec`` for the lab's test guest: kernel + initrd + its own disk copy.

Used by the demo, the ``virtlife lab create`` command and the integration tests.
It names the VM's own copy of the guest's data disk (QEMU locks images, so every VM
needs its own) and sets the kernel command line. It writes nothing: the copy is a
``DiskCopy`` in the spec, made by ``services.provision.create`` only once every check
has passed, and never over an existing file. It does not talk to libvirt.
"""

from __future__ import annotations

from pathlib import Path

from virtlife import config
from virtlife.lab.guest import GuestImage
from virtlife.xml.domain import DiskCopy, DomainSpec, NicSpec, validate_vm_name

SERIAL_LOG_DIR = Path("/var/log/libvirt/qemu")


def guest_disk_path(name: str, images_dir: Path | None = None) -> Path:
    """Where VM ``name``'s own copy of the guest disk goes (``name`` must be valid)."""
    return (images_dir or config.images_dir()) / f"{validate_vm_name(name)}.qcow2"


def lab_guest_spec(image: GuestImage, name: str, *, memory_mib: int = 192, vcpus: int = 1,
                   dirty_mib: int | None = None, disk: bool = True, user_nic: bool = True,
                   ignore_acpi: bool = False, images_dir: Path | None = None) -> DomainSpec:
    """The spec of a test-guest VM; ``dirty_mib`` starts the guest's memory dirtier,
    ``ignore_acpi`` makes a guest that ignores the ACPI power button."""
    validate_vm_name(name)
    cmdline = "console=ttyS0 quiet"
    if dirty_mib:
        cmdline += f" virtlife.dirty={dirty_mib}"
    if ignore_acpi:
        cmdline += " virtlife.acpi=ignore"
    copies = (DiskCopy(image.disk, guest_disk_path(name, images_dir)),) if disk else ()
    log = SERIAL_LOG_DIR / f"{name}-serial.log" if SERIAL_LOG_DIR.is_dir() else None
    return DomainSpec(
        name=name, memory_mib=memory_mib, vcpus=vcpus, kernel=image.kernel,
        initrd=image.initrd, cmdline=cmdline, disks=tuple(c.target for c in copies),
        nics=(NicSpec("user"),) if user_nic else (), serial_log=log, disk_copies=copies,
    )
