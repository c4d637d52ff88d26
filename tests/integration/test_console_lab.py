"""The serial console of a VM on a lab host (issue 15 L): ``virtlife console lab-a/VM``
attaches, exchanges a line with the guest's shell (busybox sh on ttyS0) and leaves
cleanly when its stdin ends. libvirt locks the pty in the host's /var/lock (that is
/run/lock); a lab host's private /run had no ``lock`` directory, so every console
there failed: "Couldn't create lock file for device '/dev/pts/0' in path
'/var/lock/LCK.._pts_0': No such file or directory".

The console process is killed and the VM removed from every lab host (``lab_vms``),
even when the test fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from migrate_support import start_vm
from test_consoles_real import Console

from lab_support import LabSession
from virtlife.lab.guest import GuestImage

pytestmark = pytest.mark.integration


@pytest.fixture
def lab_consoles() -> Iterator[list[Console]]:
    """Console processes to end after the test, whatever happened."""
    started: list[Console] = []
    yield started
    for console in started:
        console.kill()


def test_the_serial_console_of_a_vm_on_a_lab_host_exchanges_a_line(
        lab: LabSession, real_stack: GuestImage, lab_vms: list[str],
        lab_consoles: list[Console]) -> None:
    name = f"vl-it-console-{os.getpid()}"
    lab_vms.append(name)
    start_vm(lab, real_stack, name, disk=False, user_nic=False, memory_mib=128)

    console = Console(f"lab-a/{name}", env=lab.env)
    lab_consoles.append(console)
    console.wait_for("connected to the serial console", err=True)
    console.send("\necho vl-lab-$((6*7))-answer\n")
    console.wait_for("vl-lab-42-answer")
    assert console.end() == 0, console.text(err=True)
    assert console.text(err=True).splitlines()[-1] == (
        f"virtlife: left the serial console of {name}")
