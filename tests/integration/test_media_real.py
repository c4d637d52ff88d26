"""ISO CD-ROMs on the real libvirtd + QEMU: a driver ISO built by virtlife, hot-plugged
into a running test guest that mounts it and reads its Rock Ridge names, attached to a
shut-off VM's definition, and detached from both. On SATA and IDE (``--bus``, for
Windows) the CD-ROM goes in a shut-off VM's definition and QEMU has it once the VM
starts (its live XML: the test guest has no AHCI/IDE CD driver to mount it with);
attaching or detaching one while the VM runs is refused, and q35 has SATA but no IDE.

The ISO lives in the images folder (QEMU runs as libvirt-qemu and cannot reach into
pytest's private tmp folders) and is always removed; the VMs are removed by
``make_vm``'s clean-up, even when a test fails.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from virtlife import config, errors
from virtlife.hypervisor import Guest
from virtlife.hypervisor.agent import Agent
from virtlife.lab.guest import GuestImage
from virtlife.lab.spec import lab_guest_spec
from virtlife.services import provision
from virtlife.services.context import Services
from virtlife.services.isos import build_iso
from virtlife.services.media import Media
from virtlife.states import VMState
from virtlife.xml.devices import (
    DriveAddress,
    cdroms,
    controller_indexes,
    drive_addresses,
    machine,
    scsi_controllers,
)

pytestmark = pytest.mark.integration

MakeVM = Callable[..., str]
LONG = "Driver For Windows Server 2022 (Mixed-Case, Long Name).inf"
GUEST_WAIT_S = 60.0


@pytest.fixture
def driver_iso(tmp_path: Path) -> Iterator[Path]:
    """A driver ISO built by virtlife from a synthetic tree, in the images folder."""
    tree = tmp_path / "drivers"
    for path, text in {
        f"viostor/2k22/amd64/{LONG}": "long name, mixed case",
        "NetKVM/w10/amd64/netkvm.inf": "netkvm",
        "vioserial/w10/amd64/vioser.inf": "vioser",
        "qxldod/w10/amd64/qxldod.inf": "qxldod",
        "guest-agent/qemu-ga-x86_64.msi": "msi",
    }.items():
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_text(text)
    out = config.images_dir() / f"vl-it-drivers-{os.getpid()}-{tmp_path.name}.iso"
    out.unlink(missing_ok=True)
    try:
        report = build_iso(tree, out)
        assert report.warnings == ()
        yield out
    finally:
        out.unlink(missing_ok=True)


def _media(services: Services) -> Media:
    return Media(services.fleet, services.lifecycle.ops)


def guest_sh(guest: Guest, script: str) -> tuple[int, str]:
    """Run ``sh -c script`` in the guest through its agent: (exit code, stdout+stderr)."""
    pid = Agent(guest).command("guest-exec", {
        "path": "/bin/sh", "arg": ["-c", script], "capture-output": True})["pid"]
    deadline = time.monotonic() + GUEST_WAIT_S
    while time.monotonic() < deadline:
        status = Agent(guest).command("guest-exec-status", {"pid": pid})
        if status["exited"]:
            text = b"".join(base64.b64decode(status.get(k, ""))
                            for k in ("out-data", "err-data")).decode(errors="replace")
            return int(status.get("exitcode", -1)), text
        time.sleep(0.1)
    pytest.fail(f"`{script}` did not end in the guest within {GUEST_WAIT_S:.0f} s")


def until_guest(guest: Guest, script: str, *, want_ok: bool = True) -> str:
    """Run ``script`` in the guest until it succeeds (or fails, ``want_ok`` False):
    a hot-plugged device takes a moment to appear or go."""
    deadline = time.monotonic() + GUEST_WAIT_S
    code, out = guest_sh(guest, script)
    while (code == 0) != want_ok:
        if time.monotonic() > deadline:
            pytest.fail(f"`{script}` still exits {code} in the guest after "
                        f"{GUEST_WAIT_S:.0f} s: {out}")
        time.sleep(0.5)
        code, out = guest_sh(guest, script)
    return out


def _cdroms(guest: Guest, *, inactive: bool) -> list[tuple[str, str, bool]]:
    return [(c.target, c.source, c.by_virtlife)
            for c in cdroms(guest.xml(inactive=inactive))]


def test_a_running_guest_mounts_the_hot_plugged_iso_and_reads_its_names(
        services: Services, make_vm: MakeVM, real_stack: GuestImage,
        driver_iso: Path) -> None:
    name = make_vm()  # for its clean-up: redefined below without a virtio-scsi controller
    services.lifecycle.undefine(name)
    (config.images_dir() / f"{name}.qcow2").unlink()
    spec = replace(lab_guest_spec(real_stack, name, disk=False), virtio_scsi=False)
    provision.create(services.lifecycle, spec, host=services.default_host())
    services.lifecycle.start(name, wait_agent=True)
    guest = services.fleet.resolve(name)
    assert scsi_controllers(guest.xml()) == []

    result = _media(services).attach_iso(name, driver_iso)
    assert result.note == f"{driver_iso} is CD-ROM sda, live and in its definition"
    assert result.state.state is VMState.RUNNING
    for inactive in (False, True):  # live, and in the definition for the next start
        assert _cdroms(guest, inactive=inactive) == [("sda", str(driver_iso), True)]
        assert [c.model for c in scsi_controllers(guest.xml(inactive=inactive))] == [
            "virtio-scsi"]

    listing = until_guest(guest, "mkdir -p /mnt/cd && mount -t iso9660 -o ro /dev/sr0 /mnt/cd"
                                 " && ls -R /mnt/cd && umount /mnt/cd")
    assert LONG in listing
    # each extension on its own: Linux reads Rock Ridge names, Windows reads Joliet ones
    for only in ("nojoliet", "norock"):
        code, text = guest_sh(guest, f"mount -t iso9660 -o ro,{only} /dev/sr0 /mnt/cd && "
                                     f"ls -R /mnt/cd && cat '/mnt/cd/viostor/2k22/amd64/{LONG}'"
                                     "; umount /mnt/cd")
        assert code == 0, text
        for expected in ("NetKVM", "viostor", "guest-agent", "qemu-ga-x86_64.msi", LONG):
            assert expected in text, (only, text)
        assert text.endswith("long name, mixed case"), (only, text)

    detached = _media(services).detach_iso(name, driver_iso)
    assert detached.note == f"CD-ROM sda ({driver_iso}) detached, live and in its definition"
    assert _cdroms(guest, inactive=False) == [] and _cdroms(guest, inactive=True) == []
    until_guest(guest, "test -b /dev/sr0", want_ok=False)
    journal = services.store.journal  # type: ignore[union-attr]
    assert [(e.operation, e.outcome) for e in journal.list(vm=name, limit=2)] == [
        ("detach-iso", "ok"), ("attach-iso", "ok")]


def test_a_shut_off_vm_gets_the_cdrom_in_its_definition_on_its_controller(
        services: Services, make_vm: MakeVM, driver_iso: Path) -> None:
    name = make_vm()  # virtlife's VMs have a virtio-scsi controller: it is used
    guest = services.fleet.resolve(name)
    result = _media(services).attach_iso(name, driver_iso)
    assert result.note == (f"{driver_iso} is CD-ROM sda, in its definition (the guest sees "
                           "it from its next start)")
    assert str(result.state) == "shut off (unknown)"
    assert _cdroms(guest, inactive=True) == [("sda", str(driver_iso), True)]
    assert [c.index for c in scsi_controllers(guest.xml(inactive=True))] == [0]
    # attached twice: refused, the definition unchanged
    with pytest.raises(errors.AlreadyExists, match="already attached"):
        _media(services).attach_iso(name, driver_iso)
    _media(services).detach_iso(name, driver_iso)
    assert _cdroms(guest, inactive=True) == []
    journal = services.store.journal  # type: ignore[union-attr]
    assert [(e.operation, e.outcome) for e in journal.list(vm=name, limit=3)] == [
        ("detach-iso", "ok"), ("attach-iso", "refused"), ("attach-iso", "ok")]


def _on_bus(guest: Guest, *, inactive: bool) -> list[tuple[str, str, str, bool]]:
    return [(c.target, c.bus, c.source, c.by_virtlife)
            for c in cdroms(guest.xml(inactive=inactive))]


@pytest.mark.parametrize(("bus", "target", "address"), [
    ("sata", "sda", DriveAddress(0, 0, 0, 0)),  # port 0 of the AHCI controller libvirt adds
    ("ide", "hdc", DriveAddress(0, 1, 0, 0)),  # secondary master of i440fx's IDE
])
def test_a_shut_off_pc_vm_gets_a_sata_or_ide_cdrom_that_qemu_has_once_started(
        services: Services, make_vm: MakeVM, driver_iso: Path, bus: str, target: str,
        address: DriveAddress) -> None:
    name = make_vm()
    guest = services.fleet.resolve(name)
    media = _media(services)
    result = media.attach_iso(name, driver_iso, bus=bus)
    assert result.note == (f"{driver_iso} is {bus.upper()} CD-ROM {target}, in its "
                           "definition (the guest sees it from its next start)")
    config_xml = guest.xml(inactive=True)
    assert machine(config_xml).startswith("pc-i440fx-")
    assert _on_bus(guest, inactive=True) == [(target, bus, str(driver_iso), True)]
    assert drive_addresses(config_xml, bus) == {address}
    assert controller_indexes(config_xml, bus) == {0}  # added by libvirt with the CD-ROM

    services.lifecycle.start(name)
    # what libvirt started QEMU with: the CD-ROM, its ISO and virtlife's alias
    assert _on_bus(guest, inactive=False) == [(target, bus, str(driver_iso), True)]
    assert drive_addresses(guest.xml(), bus) == {address}
    for again in sorted({bus, "sata"}):
        with pytest.raises(errors.InvalidTransition, match=(
                f"cannot attach {driver_iso} to {name} on {again.upper()}: it is running, "
                f"and a {again.upper()} CD-ROM cannot be hot-plugged; shut {name} down "
                "first, or use --bus scsi")):
            media.attach_iso(name, driver_iso, bus=again)
    with pytest.raises(errors.InvalidTransition, match=f"a {bus.upper()} CD-ROM cannot be "
                                                       "hot-unplugged; shut"):
        media.detach_iso(name, driver_iso)
    assert _on_bus(guest, inactive=False) == [(target, bus, str(driver_iso), True)]

    services.lifecycle.destroy(name)
    detached = media.detach_iso(name, driver_iso)
    assert detached.note == (f"CD-ROM {target} ({driver_iso}) detached, in its definition "
                             "(the guest sees it from its next start)")
    assert _on_bus(guest, inactive=True) == []
    # it starts without it (the controller libvirt added stays, empty)
    services.lifecycle.start(name)
    assert _on_bus(guest, inactive=False) == []
    services.lifecycle.destroy(name)
    journal = services.store.journal  # type: ignore[union-attr]
    refusals = [("attach-iso", "refused")] * len({bus, "sata"})
    assert [(e.operation, e.outcome) for e in journal.list(vm=name, limit=6 + len(refusals))] \
        == [("destroy", "ok"), ("start", "ok"), ("detach-iso", "ok"), ("destroy", "ok"),
            ("detach-iso", "refused"), *refusals, ("start", "ok")]


def test_a_q35_vm_gets_sata_on_its_built_in_controller_and_ide_is_refused(
        services: Services, make_vm: MakeVM, real_stack: GuestImage,
        driver_iso: Path) -> None:
    name = make_vm()  # for its clean-up: redefined below as a q35 machine
    services.lifecycle.undefine(name)
    (config.images_dir() / f"{name}.qcow2").unlink()
    spec = replace(lab_guest_spec(real_stack, name, disk=False), machine="q35")
    provision.create(services.lifecycle, spec, host=services.default_host())
    guest = services.fleet.resolve(name)
    media = _media(services)
    # libvirt 9.0 would define it, then never start the VM (even once it is detached)
    with pytest.raises(errors.InvalidInput, match=(
            rf"{name} is a pc-q35-[\d.]+ machine, which has no IDE controller")):
        media.attach_iso(name, driver_iso, bus="ide")
    assert _on_bus(guest, inactive=True) == []
    assert controller_indexes(guest.xml(inactive=True), "ide") == set()

    result = media.attach_iso(name, driver_iso, bus="sata")
    assert result.note.startswith(f"{driver_iso} is SATA CD-ROM sda, in its definition")
    config_xml = guest.xml(inactive=True)
    assert drive_addresses(config_xml, "sata") == {DriveAddress(0, 0, 0, 0)}
    assert controller_indexes(config_xml, "sata") == {0}  # the built-in one, no other
    services.lifecycle.start(name)
    assert _on_bus(guest, inactive=False) == [("sda", "sata", str(driver_iso), True)]
    services.lifecycle.destroy(name)
    media.detach_iso(name, driver_iso)
    assert _on_bus(guest, inactive=True) == []
