"""``Media`` (attach-iso / detach-iso) on libvirt's test driver: refused by the VM's
state (and SATA/IDE CD-ROMs by a running or paused one), the ISO looked for on the host,
journalled, and the device changes it asks for on each bus.

The test driver has no device hot-plug (it says so: ``Unsupported``); where a test
needs the change itself, ``Guest.attach_device`` / ``detach_device`` are replaced by
recorders, so what is checked is which devices and flags ``Media`` asks libvirt for.
The real change is checked on QEMU in tests/integration/test_media_real.py.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support import write_iso_stub
from virtlife import errors
from virtlife.hypervisor import Guest
from virtlife.services.lifecycle import Lifecycle
from virtlife.services.media import CdromBus, Media
from virtlife.xml.devices import DriveAddress, cdrom_xml, scsi_cdrom_xml


@dataclass
class Calls:
    """Device changes asked of libvirt: (attach|detach, device tag, live, config), and
    the device XML of each."""

    made: list[tuple[str, str, bool, bool]] = field(default_factory=list)
    xml: list[str] = field(default_factory=list)

    def recorder(self, kind: str) -> Callable[..., None]:
        def record(_guest: Guest, xml: str, *, live: bool, config: bool) -> None:
            self.made.append((kind, ET.fromstring(xml).tag, live, config))
            self.xml.append(xml)
        return record


@pytest.fixture
def media(lifecycle: Lifecycle) -> Media:
    return Media(lifecycle.fleet, lifecycle.ops)


@pytest.fixture
def iso(tmp_path: Path) -> Path:
    return write_iso_stub(tmp_path / "virtio-win.iso")


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    recorded = Calls()
    monkeypatch.setattr(Guest, "attach_device", recorded.recorder("attach"))
    monkeypatch.setattr(Guest, "detach_device", recorded.recorder("detach"))
    return recorded


def _journal(lc: Lifecycle, vm: str) -> list[tuple[str, str]]:
    assert lc.journal is not None
    return [(e.operation, e.outcome) for e in lc.journal.list(vm=vm)]


def _define_with_cdroms(lc: Lifecycle, name: str, *disks: str, machine: str = "") -> None:
    kind = f" machine='{machine}'" if machine else ""
    lc.define(f"<domain type='test'><name>{name}</name><memory unit='MiB'>64</memory>"
              f"<os><type{kind}>hvm</type></os><devices>"
              f"<controller type='scsi' index='0' model='virtio-scsi'/>{''.join(disks)}"
              "</devices></domain>", host="t")


def _sata(source: str, target: str, port: int) -> str:
    return cdrom_xml(source, target=target, bus="sata", address=DriveAddress(0, 0, 0, port))


@pytest.mark.parametrize(("vm", "message"), [
    ("vm-crashed", "cannot attach-iso vm-crashed: it is crashed, not shut off, running, "
                   "paused or idle"),
    ("vm-pmsusp", "wake it with pmwakeup first"),
    ("vm-saved", "start it to restore its saved RAM"),
])
def test_attach_is_refused_by_the_vms_state_and_journalled(
        media: Media, lifecycle: Lifecycle, iso: Path, calls: Calls, vm: str,
        message: str) -> None:
    with pytest.raises(errors.InvalidTransition, match=message) as caught:
        media.attach_iso(vm, iso)
    assert caught.value.exit_code == 3
    assert calls.made == []
    assert _journal(lifecycle, vm) == [("attach-iso", "refused")]


def test_an_iso_that_is_not_on_the_host_is_not_found_and_journalled(
        media: Media, lifecycle: Lifecycle, tmp_path: Path, calls: Calls) -> None:
    missing = tmp_path / "nope.iso"
    with pytest.raises(errors.NotFound, match=re.escape(
            f"cannot attach {missing} to vm-running: there is no such file on host t")):
        media.attach_iso("vm-running", missing)
    assert calls.made == []
    assert _journal(lifecycle, "vm-running") == [("attach-iso", "error")]


def test_the_test_drivers_missing_hotplug_is_reported_as_unsupported(
        media: Media, lifecycle: Lifecycle, iso: Path) -> None:
    with pytest.raises(errors.Unsupported, match="cannot attach a device to vm-off on t"):
        media.attach_iso("vm-off", iso)
    assert _journal(lifecycle, "vm-off") == [("attach-iso", "error")]


@pytest.mark.parametrize(("vm", "live", "where"), [
    ("vm-running", True, "live and in its definition"),
    ("vm-paused", True, "live and in its definition"),
    ("vm-off", False, "in its definition (the guest sees it from its next start)"),
])
def test_attach_adds_a_virtio_scsi_controller_then_the_cdrom_live_when_it_runs(
        media: Media, lifecycle: Lifecycle, iso: Path, calls: Calls, vm: str, live: bool,
        where: str) -> None:
    result = media.attach_iso(vm, iso)
    assert calls.made == [("attach", "controller", live, True), ("attach", "disk", live, True)]
    controller, disk = (ET.fromstring(x) for x in calls.xml)
    assert controller.get("model") == "virtio-scsi"
    assert disk.find("source").get("file") == str(iso)  # type: ignore[union-attr]
    assert result.note == f"{iso} is CD-ROM sda, {where}"
    assert result.op_id and _journal(lifecycle, vm) == [("attach-iso", "ok")]


def test_attach_uses_the_vms_virtio_scsi_controller_and_a_relative_path_is_made_absolute(
        media: Media, lifecycle: Lifecycle, iso: Path, calls: Calls,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _define_with_cdroms(lifecycle, "cd1")
    monkeypatch.chdir(iso.parent)
    result = media.attach_iso("cd1", iso.name)
    assert calls.made == [("attach", "disk", False, True)]
    assert result.note.startswith(f"{iso} is CD-ROM sda")


def test_an_iso_already_attached_is_refused(media: Media, lifecycle: Lifecycle, iso: Path,
                                            calls: Calls) -> None:
    _define_with_cdroms(lifecycle, "cd1", scsi_cdrom_xml(str(iso), target="sdb",
                                                         controller=0, unit=0))
    with pytest.raises(errors.AlreadyExists, match="is already attached to cd1 as CD-ROM sdb"):
        media.attach_iso("cd1", iso)
    assert calls.made == []
    assert _journal(lifecycle, "cd1") == [("attach-iso", "refused"), ("define", "ok")]


def test_detach_removes_virtlifes_cdrom_for_that_file_only(
        media: Media, lifecycle: Lifecycle, iso: Path, calls: Calls) -> None:
    _define_with_cdroms(
        lifecycle, "cd1",
        scsi_cdrom_xml("/isos/other.iso", target="sda", controller=0, unit=0),
        scsi_cdrom_xml(str(iso), target="sdb", controller=0, unit=1))
    result = media.detach_iso("cd1", iso)
    assert calls.made == [("detach", "disk", False, True)]
    [detached] = calls.xml
    assert ET.fromstring(detached).find("target").get("dev") == "sdb"  # type: ignore[union-attr]
    assert result.note == f"CD-ROM sdb ({iso}) detached, in its definition (the guest sees " \
                          "it from its next start)"
    assert _journal(lifecycle, "cd1")[0] == ("detach-iso", "ok")


def test_detach_says_when_no_cdrom_holds_the_file_or_virtlife_did_not_attach_it(
        media: Media, lifecycle: Lifecycle, iso: Path, calls: Calls) -> None:
    foreign = (f"<disk type='file' device='cdrom'><source file='{iso}'/>"
               "<target dev='hdc' bus='ide'/></disk>")
    _define_with_cdroms(lifecycle, "cd1", foreign)
    with pytest.raises(errors.NotFound, match=re.escape(
            "CD-ROM hdc holds it, but virtlife did not attach it; remove it with `virsh "
            "detach-disk cd1 hdc`")):
        media.detach_iso("cd1", iso)
    with pytest.raises(errors.NotFound, match="vm-running has no CD-ROM holding"):
        media.detach_iso("vm-running", iso)
    assert calls.made == []
    assert _journal(lifecycle, "vm-running") == [("detach-iso", "error")]


def test_a_live_cdrom_that_never_goes_away_times_out_naming_it(
        media: Media, lifecycle: Lifecycle, iso: Path, calls: Calls) -> None:
    _define_with_cdroms(lifecycle, "cd1", scsi_cdrom_xml(str(iso), target="sda",
                                                         controller=0, unit=0))
    lifecycle.start("cd1")
    with pytest.raises(errors.OperationTimeout,
                       match=r"CD-ROM sda of cd1 was still there after 0\.3 s"):
        media.detach_iso("cd1", iso, timeout_s=0.3)
    assert calls.made == [("detach", "disk", True, True)]
    assert _journal(lifecycle, "cd1")[0] == ("detach-iso", "error")


def test_detach_is_refused_by_the_vms_state(media: Media, lifecycle: Lifecycle, iso: Path,
                                            calls: Calls) -> None:
    with pytest.raises(errors.InvalidTransition, match="cannot detach-iso vm-crashed"):
        media.detach_iso("vm-crashed", iso)
    assert _journal(lifecycle, "vm-crashed") == [("detach-iso", "refused")]


# -- --bus sata / ide ---------------------------------------------------------------------

@pytest.mark.parametrize(("bus", "target", "address"), [
    (CdromBus.SATA, "sda", {"controller": "0", "bus": "0", "unit": "0"}),
    ("ide", "hdc", {"controller": "0", "bus": "1", "unit": "0"}),
])
def test_a_shut_off_vm_gets_a_sata_or_ide_cdrom_in_its_definition(
        media: Media, lifecycle: Lifecycle, iso: Path, calls: Calls, bus: str,
        target: str, address: dict[str, str]) -> None:
    result = media.attach_iso("vm-off", iso, bus=bus)
    # no controller is asked for: libvirt adds the SATA one, IDE is built in
    assert calls.made == [("attach", "disk", False, True)]
    disk = ET.fromstring(calls.xml[0])
    kind = CdromBus(bus)
    assert disk.find("target").attrib == {"dev": target, "bus": kind.value}  # type: ignore[union-attr]
    assert disk.find("address").attrib == {  # type: ignore[union-attr]
        "type": "drive", "target": "0", **address}
    assert disk.find("alias").get("name") == f"ua-virtlife-iso-{target}"  # type: ignore[union-attr]
    assert disk.find("source").get("file") == str(iso)  # type: ignore[union-attr]
    assert result.note == (f"{iso} is {kind.label} CD-ROM {target}, in its definition (the "
                           "guest sees it from its next start)")
    assert _journal(lifecycle, "vm-off") == [("attach-iso", "ok")]


def test_a_sata_cdrom_takes_the_next_sd_name_after_the_scsi_ones(
        media: Media, lifecycle: Lifecycle, iso: Path, calls: Calls) -> None:
    _define_with_cdroms(lifecycle, "cd1", scsi_cdrom_xml("/isos/linux.iso", target="sda",
                                                         controller=0, unit=0),
                        _sata("/isos/win.iso", "sdb", 0), machine="q35")
    result = media.attach_iso("cd1", iso, bus="sata")
    disk = ET.fromstring(calls.xml[0])
    assert disk.find("target").get("dev") == "sdc"  # type: ignore[union-attr]
    assert disk.find("address").get("unit") == "1"  # type: ignore[union-attr]
    assert result.note.startswith(f"{iso} is SATA CD-ROM sdc")


@pytest.mark.parametrize(("vm", "state"), [("vm-running", "running"), ("vm-paused", "paused")])
@pytest.mark.parametrize("bus", ["sata", "ide"])
def test_sata_and_ide_are_refused_on_a_running_or_paused_vm(
        media: Media, lifecycle: Lifecycle, iso: Path, calls: Calls, vm: str, state: str,
        bus: str) -> None:
    label = bus.upper()
    with pytest.raises(errors.InvalidTransition, match=re.escape(
            f"cannot attach {iso} to {vm} on {label}: it is {state}, and a {label} CD-ROM "
            f"cannot be hot-plugged; shut {vm} down first, or use --bus scsi")) as caught:
        media.attach_iso(vm, iso, bus=bus)
    assert caught.value.exit_code == 3
    assert calls.made == []
    assert _journal(lifecycle, vm) == [("attach-iso", "refused")]


def test_an_unknown_bus_is_bad_input_before_anything_begins(
        media: Media, lifecycle: Lifecycle, iso: Path, calls: Calls) -> None:
    with pytest.raises(errors.InvalidInput,
                       match="unknown CD-ROM bus 'floppy': use one of scsi, sata, ide"):
        media.attach_iso("vm-off", iso, bus="floppy")
    assert calls.made == [] and _journal(lifecycle, "vm-off") == []


def test_ide_is_refused_on_q35_and_when_its_four_places_are_taken(
        media: Media, lifecycle: Lifecycle, iso: Path, calls: Calls) -> None:
    _define_with_cdroms(lifecycle, "q1", machine="pc-q35-7.2")
    with pytest.raises(errors.InvalidInput, match=re.escape(
            "q1 is a pc-q35-7.2 machine, which has no IDE controller (i440fx `pc` machines "
            "have one): use --bus sata")):
        media.attach_iso("q1", iso, bus="ide")
    full = [f"<disk type='file' device='disk'><source file='/img/{c}.img'/>"
            f"<target dev='hd{c}' bus='ide'/></disk>" for c in "abcd"]
    _define_with_cdroms(lifecycle, "full", *full, machine="pc-i440fx-7.2")
    with pytest.raises(errors.InvalidInput, match="full has no free IDE place"):
        media.attach_iso("full", iso, bus="ide")
    assert calls.made == []
    assert _journal(lifecycle, "q1")[0] == _journal(lifecycle, "full")[0] == (
        "attach-iso", "refused")


def test_detach_removes_a_sata_cdrom_from_a_shut_off_vms_definition(
        media: Media, lifecycle: Lifecycle, iso: Path, calls: Calls) -> None:
    _define_with_cdroms(lifecycle, "cd1", _sata(str(iso), "sda", 0))
    result = media.detach_iso("cd1", iso)
    assert calls.made == [("detach", "disk", False, True)]
    ref = ET.fromstring(calls.xml[0])
    assert ref.find("target").attrib == {"dev": "sda", "bus": "sata"}  # type: ignore[union-attr]
    assert result.note == (f"CD-ROM sda ({iso}) detached, in its definition (the guest "
                           "sees it from its next start)")


def test_detach_of_a_sata_cdrom_from_a_running_vm_is_refused_before_anything(
        media: Media, lifecycle: Lifecycle, iso: Path, calls: Calls) -> None:
    _define_with_cdroms(lifecycle, "cd1", _sata(str(iso), "sda", 0))
    lifecycle.start("cd1")
    with pytest.raises(errors.InvalidTransition, match=re.escape(
            f"cannot detach CD-ROM sda ({iso}) from cd1: it is running, and a SATA CD-ROM "
            "cannot be hot-unplugged; shut cd1 down first, then detach it")):
        media.detach_iso("cd1", iso)
    assert calls.made == []
    assert _journal(lifecycle, "cd1")[0] == ("detach-iso", "refused")


@pytest.mark.parametrize(("content", "why"), [
    (b"menuentry 'not a CD'\n", "it has no ISO 9660 volume descriptor at sector 16"),
    (b"QFI\xfb" + b"\0" * 40000, "it has no ISO 9660 volume descriptor at sector 16"),
])
def test_a_file_that_is_not_an_iso_image_is_refused_on_a_local_host(
        media: Media, lifecycle: Lifecycle, tmp_path: Path, calls: Calls, content: bytes,
        why: str) -> None:
    # issue 15: a text file was attached as a CD (the guest then found no disc)
    text = tmp_path / "notes.iso"
    text.write_bytes(content)
    with pytest.raises(errors.InvalidInput, match=re.escape(
            f"cannot attach {text} to vm-off: it is not an ISO 9660 image ({why})")) as caught:
        media.attach_iso("vm-off", text)
    assert caught.value.exit_code == 64
    assert calls.made == []


def test_a_folder_is_not_an_iso_image(media: Media, tmp_path: Path, calls: Calls) -> None:
    with pytest.raises(errors.InvalidInput, match="not an ISO 9660 image \\(it is a folder\\)"):
        media.attach_iso("vm-off", tmp_path)
    assert calls.made == []


def test_an_iso_reached_through_a_link_is_attached(media: Media, iso: Path, tmp_path: Path,
                                                  calls: Calls) -> None:
    link = tmp_path / "current.iso"
    link.symlink_to(iso)
    result = media.attach_iso("vm-off", link)
    assert result.note.startswith(f"{link} is CD-ROM sda") and result.warnings == ()


def test_an_iso_unreadable_here_is_attached_with_a_warning(
        media: Media, tmp_path: Path, calls: Calls, monkeypatch: pytest.MonkeyPatch) -> None:
    from virtlife.services import isos
    from virtlife.services import media as media_module

    locked = write_iso_stub(tmp_path / "locked.iso")
    monkeypatch.setattr(media_module, "check_iso_image",
                        lambda _p: isos.IsoCheck(None, "cannot read it: Permission denied"))
    result = media.attach_iso("vm-off", locked)
    assert calls.made[-1][:2] == ("attach", "disk")
    assert result.warnings == (f"{locked} was not checked to be an ISO 9660 image: cannot "
                               "read it: Permission denied; attached anyway",)


def test_on_a_remote_host_the_iso_is_not_read_here_and_a_warning_says_so(
        media: Media, tmp_path: Path, calls: Calls, monkeypatch: pytest.MonkeyPatch) -> None:
    from virtlife.services import media as media_module

    text = tmp_path / "notes.iso"
    text.write_text("not a CD\n")  # there, it might be anything: it is not read here
    monkeypatch.setattr(media_module, "is_remote", lambda _uri: True)
    result = media.attach_iso("vm-off", text)
    assert calls.made[-1][:2] == ("attach", "disk")
    [warning] = result.warnings
    assert warning.startswith(f"{text} was not checked to be an ISO 9660 image: it is on "
                              "host t, another machine")
