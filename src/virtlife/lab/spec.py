"""A ``DomainSpec`` for the lab's test guest: kernel + initrd + its own disk copy.

Used by the demo, the ``virtlife lab create`` command and the integration tests.
It copies the guest's data disk (QEMU locks images, so every VM needs its own) and
sets the kernel command line; it does not talk to libvirt.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from virtlife import config
from virtlife.lab.guest import GuestImage
from virtlife.xml.domain import DomainSpec, NicSpec

SERIAL_LOG_DIR = Path("/var/log/libvirt/qemu")


def guest_disk_copy(image: GuestImage, name: str, images_dir: Path | None = None) -> Path:
    """A fresh copy of the guest's data disk for VM ``name``."""
    target_dir = images_dir or config.images_dir()
    target_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(target_dir, 0o755)
    disk = target_dir / f"{name}.qcow2"
    shutil.copyfile(image.disk, disk)
    os.chmod(disk, 0o644)
    return disk


def lab_guest_spec(image: GuestImage, name: str, *, memory_mib: int = 192, vcpus: int = 1,
                   dirty_mib: int | None = None, disk: bool = True, user_nic: bool = True,
                   images_dir: Path | None = None) -> DomainSpec:
    """The spec of a test-guest VM; ``dirty_mib`` starts the guest's memory dirtier."""
    cmdline = "console=ttyS0 quiet"
    if dirty_mib:
        cmdline += f" virtlife.dirty={dirty_mib}"
    disks = (guest_disk_copy(image, name, images_dir),) if disk else ()
    log = SERIAL_LOG_DIR / f"{name}-serial.log" if SERIAL_LOG_DIR.is_dir() else None
    return DomainSpec(
        name=name, memory_mib=memory_mib, vcpus=vcpus, kernel=image.kernel,
        initrd=image.initrd, cmdline=cmdline, disks=disks,
        nics=(NicSpec("user"),) if user_nic else (), serial_log=log,
    )
