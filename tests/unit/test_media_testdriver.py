"""``Media`` (attach-iso / detach-iso) on libvirt's test driver: refused by the VM's
state, the ISO looked for on the host, journalled, and the device changes it asks for.

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

from virtlife import errors
from virtlife.hypervisor import Guest
from virtlife.services.lifecycle import Lifecycle
from virtlife.services.media import Media
from virtlife.xml.devices import scsi_cdrom_xml


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
    path = tmp_path / "virtio-win.iso"
    path.write_bytes(b"\0" * 4096)
    return path


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    recorded = Calls()
    monkeypatch.setattr(Guest, "attach_device", recorded.recorder("attach"))
    monkeypatch.setattr(Guest, "detach_device", recorded.recorder("detach"))
    return recorded


def _journal(lc: Lifecycle, vm: str) -> list[tuple[str, str]]:
    assert lc.journal is not None
    return [(e.operation, e.outcome) for e in lc.journal.list(vm=vm)]


def _define_with_cdroms(lc: Lifecycle, name: str, *disks: str) -> None:
    lc.define(f"<domain type='test'><name>{name}</name><memory unit='MiB'>64</memory>"
              f"<os><type>hvm</type></os><devices>"
              f"<controller type='scsi' index='0' model='virtio-scsi'/>{''.join(disks)}"
              "</devices></domain>", host="t")


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
