"""Creating a VM writes nothing before every check has passed, and never over a file.

The lab's spec asks for a copy of the test guest's disk; ``provision.create`` makes it
only once the name is valid and free on the host, creates it exclusively, and removes
it again when the define fails. A fake guest image (three small files) stands in for
the real test guest; the host is the test driver's node ``t``.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from virtlife import errors
from virtlife.lab.guest import GuestImage
from virtlife.lab.spec import lab_guest_spec
from virtlife.services import provision
from virtlife.services.lifecycle import Lifecycle
from virtlife.xml.domain import DiskCopy, DomainSpec

GUEST_DISK = b"fresh test-guest disk\n"
PRECIOUS = b"the running VM's own data\n"


@pytest.fixture
def image(tmp_path: Path) -> GuestImage:
    guest = tmp_path / "guest"
    guest.mkdir()
    for name, data in (("vmlinuz", b"kernel"), ("initrd.img", b"initrd"),
                       ("disk.qcow2", GUEST_DISK)):
        (guest / name).write_bytes(data)
    return GuestImage(kernel=guest / "vmlinuz", initrd=guest / "initrd.img",
                      disk=guest / "disk.qcow2", kernel_version="6.1-fake",
                      recipe_hash="0" * 64)


@pytest.fixture
def images(tmp_path: Path) -> Path:
    return tmp_path / "images"


def _vm_exists(lifecycle: Lifecycle, name: str) -> bool:
    return lifecycle.fleet.host("t").find(name) is not None


def test_lab_spec_writes_no_file(image: GuestImage, images: Path) -> None:
    spec = lab_guest_spec(image, "t1", images_dir=images)
    assert spec.disks == (images / "t1.qcow2",)
    assert spec.disk_copies == (DiskCopy(image.disk, images / "t1.qcow2"),)
    assert not images.exists()


def test_create_with_the_name_of_a_running_vm_leaves_its_disk_untouched(
        lifecycle: Lifecycle, image: GuestImage, images: Path) -> None:
    images.mkdir()
    disk = images / "vm-running.qcow2"  # the disk the running VM uses
    disk.write_bytes(PRECIOUS)
    spec = lab_guest_spec(image, "vm-running", images_dir=images)
    with pytest.raises(errors.VMAlreadyExists, match="vm-running"):
        provision.create(lifecycle, spec, host="t")
    assert disk.read_bytes() == PRECIOUS


def test_create_refuses_when_the_disk_copy_exists_and_names_the_file(
        lifecycle: Lifecycle, image: GuestImage, images: Path) -> None:
    images.mkdir()
    disk = images / "t1.qcow2"
    disk.write_bytes(PRECIOUS)
    spec = lab_guest_spec(image, "t1", images_dir=images)
    with pytest.raises(errors.AlreadyExists) as refused:
        provision.create(lifecycle, spec, host="t")
    assert str(disk) in str(refused.value)
    assert disk.read_bytes() == PRECIOUS
    assert not _vm_exists(lifecycle, "t1")


def test_create_refuses_a_disk_path_that_is_a_symlink_to_another_file(
        lifecycle: Lifecycle, image: GuestImage, images: Path, tmp_path: Path) -> None:
    images.mkdir()
    other = tmp_path / "other.qcow2"
    other.write_bytes(PRECIOUS)
    (images / "t1.qcow2").symlink_to(other)
    with pytest.raises(errors.AlreadyExists):
        provision.create(lifecycle, lab_guest_spec(image, "t1", images_dir=images), host="t")
    assert other.read_bytes() == PRECIOUS


def test_create_makes_the_copy_readable_and_defines_a_vm_that_uses_it(
        lifecycle: Lifecycle, image: GuestImage, images: Path) -> None:
    result = provision.create(lifecycle, lab_guest_spec(image, "t1", images_dir=images),
                              host="t")
    disk = images / "t1.qcow2"
    assert result.vm == "t1"
    assert disk.read_bytes() == GUEST_DISK
    assert stat.S_IMODE(disk.stat().st_mode) == 0o644
    assert stat.S_IMODE(images.stat().st_mode) & 0o055 == 0o055
    xml = lifecycle.fleet.host("t").lookup("t1").xml(inactive=True)
    assert str(disk) in xml


def test_a_failure_after_the_vm_was_defined_keeps_the_disk_it_uses(
        lifecycle: Lifecycle, image: GuestImage, images: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    define = lifecycle.define

    def define_then_fail(xml: str, **kwargs: object) -> object:
        define(xml, **kwargs)  # type: ignore[arg-type]
        raise errors.StoreUnavailable("the journal went away")

    monkeypatch.setattr(lifecycle, "define", define_then_fail)
    with pytest.raises(errors.StoreUnavailable):
        provision.create(lifecycle, lab_guest_spec(image, "t1", images_dir=images), host="t")
    assert _vm_exists(lifecycle, "t1")
    assert (images / "t1.qcow2").read_bytes() == GUEST_DISK


def test_a_define_rejected_by_libvirt_removes_the_disk_copy(
        lifecycle: Lifecycle, image: GuestImage, images: Path) -> None:
    spec = lab_guest_spec(image, "t1", images_dir=images, memory_mib=10**30)
    with pytest.raises(errors.VirtlifeError):
        provision.create(lifecycle, spec, host="t")
    assert list(images.iterdir()) == []
    assert not _vm_exists(lifecycle, "t1")


@pytest.mark.parametrize("name", ["../x", "a/b/c", "/abs", ".hidden", "-opt", ""])
def test_a_name_that_is_not_a_plain_file_name_is_refused_before_any_write(
        lifecycle: Lifecycle, image: GuestImage, images: Path, tmp_path: Path,
        name: str) -> None:
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(errors.InvalidInput):
        lab_guest_spec(image, name, images_dir=images)
    with pytest.raises(errors.InvalidInput):
        provision.create(lifecycle, DomainSpec(name=name), host="t")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_an_images_path_that_is_a_file_fails_in_one_message(
        lifecycle: Lifecycle, image: GuestImage, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "images"
    not_a_dir.write_text("a file")
    with pytest.raises(errors.OperationFailed, match="is not a directory"):
        provision.create(lifecycle, lab_guest_spec(image, "t1", images_dir=not_a_dir),
                         host="t")
    assert not _vm_exists(lifecycle, "t1")


def test_a_missing_source_disk_fails_without_leaving_a_copy(
        lifecycle: Lifecycle, image: GuestImage, images: Path) -> None:
    image.disk.unlink()
    with pytest.raises(errors.OperationFailed, match="cannot read the disk"):
        provision.create(lifecycle, lab_guest_spec(image, "t1", images_dir=images),
                         host="t")
    assert not (images / "t1.qcow2").exists()
    assert not _vm_exists(lifecycle, "t1")


def test_when_a_later_copy_is_refused_the_earlier_copies_are_removed(
        lifecycle: Lifecycle, image: GuestImage, images: Path) -> None:
    images.mkdir()
    (images / "second.qcow2").write_bytes(PRECIOUS)
    first, second = images / "first.qcow2", images / "second.qcow2"
    spec = DomainSpec(name="t1", memory_mib=64, disks=(first, second),
                      disk_copies=(DiskCopy(image.disk, first), DiskCopy(image.disk, second)))
    with pytest.raises(errors.AlreadyExists, match=r"second\.qcow2"):
        provision.create(lifecycle, spec, host="t")
    assert not first.exists()
    assert second.read_bytes() == PRECIOUS
