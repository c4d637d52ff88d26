"""One VM, one host, in the lab (issue 15 B): after ``migrate --keep-source`` the VM is
defined on both hosts, and nothing but virtlife stops a second QEMU of a diskless VM
(QEMU's image lock guards only disks). What is counted is QEMU processes per UUID on
this machine (the lab's hosts are namespaces of it), not start errors.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from migrate_support import start_vm, virsh

from lab_support import LabSession
from virtlife.lab.guest import GuestImage

pytestmark = pytest.mark.integration


def _qemus(uuid: str) -> int:
    """QEMU processes of the VM ``uuid`` on this machine (all lab hosts)."""
    found = subprocess.run(["pgrep", "-c", "-f", f"qemu-system.*-uuid {uuid}"],
                           capture_output=True, text=True, check=False)
    return int(found.stdout.strip() or 0)


def test_a_vm_kept_at_the_source_never_runs_twice(lab: LabSession, real_stack: GuestImage,
                                                  lab_vms: list[str]) -> None:
    name = f"vl-it-one-{os.getpid()}"
    lab_vms.append(name)
    start_vm(lab, real_stack, name, disk=False, user_nic=False, memory_mib=128)
    uuid = virsh(lab.uri("lab-a"), "domuuid", name).stdout.strip()
    assert _qemus(uuid) == 1

    moved = lab.virtlife("migrate", name, "lab-b", "--keep-source")
    assert moved.returncode == 0, moved.stderr
    assert "marked as a left-behind copy" in moved.stdout, moved.stdout
    assert virsh(lab.uri("lab-a"), "domstate", name).stdout.strip() == "shut off"

    refused = lab.virtlife("start", f"lab-a/{name}")
    assert refused.returncode == 3, refused.stderr
    assert "active on lab-b" in refused.stderr, refused.stderr
    assert _qemus(uuid) == 1

    # stopped at lab-b, the kept copy still may not start: the VM lives at lab-b
    assert lab.virtlife("destroy", f"lab-b/{name}").returncode == 0
    refused = lab.virtlife("start", f"lab-a/{name}")
    assert refused.returncode == 3 and "lives on lab-b" in refused.stderr, refused.stderr
    assert _qemus(uuid) == 0

    # started where it lives, once; a second start anywhere is refused
    assert lab.virtlife("start", f"lab-b/{name}").returncode == 0
    assert _qemus(uuid) == 1
    refused = lab.virtlife("start", f"lab-a/{name}", "--ignore-unreachable")
    assert refused.returncode == 3, refused.stderr
    assert _qemus(uuid) == 1
