"""What the benchmarks share: preparing the real stack and removing their VMs."""

from __future__ import annotations

from virtlife import config
from virtlife.lab.guest import GuestImage, build_guest
from virtlife.lab.hostprep import can_run_real_stack, prepare_local_host
from virtlife.services.context import Services

URI = "qemu:///system"


def prepare() -> GuestImage | None:
    """Prepare this host and the test guest; None (after saying why) if we cannot."""
    ok, why = can_run_real_stack()
    if not ok:
        print(f"bench needs the real stack: {why}")
        return None
    prepare_local_host()
    return build_guest()


def remove_vm(services: Services, name: str) -> None:
    """Destroy and undefine a benchmark VM and delete its disk copy."""
    guest = services.fleet.host(services.default_host()).find(name)
    if guest is not None:
        if guest.status().state.is_active:
            guest.destroy()
        guest.undefine(managed_save=True)
    (config.images_dir() / f"{name}.qcow2").unlink(missing_ok=True)
