"""Does KVM really work on this machine? One cached probe with QEMU itself.

A ``/dev/kvm`` node can exist while KVM is unusable (nested virtualisation that
fails on MSR writes, as on our CI machines), so its presence proves nothing. The
probe starts ``qemu-system-x86_64 -accel kvm -cpu host`` stopped (``-S``), and asks
it over QMP to quit: a working KVM exits 0 within milliseconds, a broken one aborts.
Only meaningful for the local host; it does not talk to libvirt.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

QEMU = "qemu-system-x86_64"


@functools.cache
def kvm_works_locally() -> bool:
    if not os.path.exists("/dev/kvm"):
        return False
    fallback = f"/usr/bin/{QEMU}"
    qemu = shutil.which(QEMU) or (fallback if os.path.exists(fallback) else None)
    if qemu is None:
        return False
    qmp = '{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n'
    try:
        proc = subprocess.run(
            [qemu, "-accel", "kvm", "-cpu", "host", "-machine", "pc", "-nodefaults",
             "-display", "none", "-S", "-qmp", "stdio"],
            input=qmp, capture_output=True, text=True, timeout=15, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0
