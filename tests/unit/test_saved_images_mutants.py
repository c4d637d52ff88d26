"""Save images (``services.saved``), pinned where mutation testing (mutmut 3.3.1) found
them loose.

Each test failed on at least one surviving mutant: the refusals' full text (the file,
the host, the operation, why an image is stale), a file's identity recorded at a save
and at a reconciliation (another file later at the path is judged afresh), a VM that
ran outside virtlife since its save, the other images of a VM a restore makes stale, a
host that cannot be asked, and a reconciliation that must settle each row it can, with
the reason it records. Against libvirt's test driver, as test_saved_images.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from support import NODE_URI
from virtlife import errors
from virtlife.hypervisor.guest import Guest
from virtlife.services.fleet import Fleet, HostRef
from virtlife.services.lifecycle import Lifecycle
from virtlife.services.saved import restore_refusal, start_refusal
from virtlife.states import StateInfo, VMState
from virtlife.store import open_store
from virtlife.store.db import Store
from virtlife.store.images import ImageStatus, SavedImage, SavedImages
from virtlife.store.journal import Actor

RUNNING = "11111111-1111-1111-1111-111111111111"  # vm-running in tests/data/node.xml
OFF = "44444444-4444-4444-4444-444444444444"  # vm-off
NOWHERE = "99999999-9999-9999-9999-999999999999"  # no VM of the node file
DOWN_URI = "qemu+tcp://127.0.0.1:1/system"  # nothing listens there: refused at once

Make = Callable[..., Lifecycle]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "store.db") as s:
        yield s


def _images(lc: Lifecycle) -> SavedImages:
    assert lc.saved.images is not None
    return lc.saved.images


def _raw(lc: Lifecycle, vm: str, host: str = "t") -> Guest:
    """The VM through libvirt alone: what it does there, virtlife never hears of."""
    guest = lc.fleet.host(host).find(vm)
    assert guest is not None
    return guest


def _another_save_at(lc: Lifecycle, path: Path) -> None:
    """Replace the file at ``path`` by a save virtlife did not make (``virsh save``): the
    VM is started and saved by libvirt alone, to a file of a later mtime."""
    before = os.stat(path)
    path.unlink()
    guest = _raw(lc, "vm-running")
    if not guest.status().state.is_active:
        guest.start()
    time.sleep(0.05)  # past the file system's timestamp granularity
    guest.save(str(path))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns)


# -- the pure verdicts, in full ------------------------------------------------------------

def _image(op_id: str, host: str, path: str, day: int, status: ImageStatus,
           why: str = "") -> SavedImage:
    return SavedImage(op_id, RUNNING, host, "web1", path,
                      datetime(2026, 1, day, 3, 4, 5, tzinfo=UTC), status, why)


def test_start_refusal_names_every_saved_image_and_restores_the_newest() -> None:
    newest = _image("op2", "h2", "/s/b.sav", 3, ImageStatus.SAVED)
    older = _image("op1", "h1", "/s/a.sav", 2, ImageStatus.SAVED)
    assert start_refusal("web1", [newest, older]) == (
        "cannot start web1: it was saved to /s/b.sav on h2 (saved 2026-01-03 03:04:05 UTC, "
        "operation op2), /s/a.sav on h1 (saved 2026-01-02 03:04:05 UTC, operation op1) and "
        "has not run since; booting it fresh would drop that RAM and make the image "
        "corrupt its disk later. Run `virtlife restore /s/b.sav --host h2`, or "
        "`virtlife start web1 --discard-saved` to boot fresh and mark the image stale")


@pytest.mark.parametrize(("status", "how"), [
    (ImageStatus.STALE, "it is stale"),
    (ImageStatus.RESTORED, "it was restored already"),
])
def test_restore_refusal_of_an_image_the_disk_left_in_full(status: ImageStatus,
                                                           how: str) -> None:
    image = _image("op1", "h1", "/s/a.sav", 2, status, "web1 was started (operation op9)")
    assert restore_refusal("/s/a.sav", image, None) == (
        f"cannot restore /s/a.sav: {how} (web1 was started (operation op9)); the VM's disk "
        "has moved on since the save (operation op1), and restoring that RAM over it would "
        "corrupt the file system. Boot the VM normally, or remove the file")


def test_restore_refusal_of_a_vm_that_ran_since_in_full() -> None:
    assert restore_refusal("/s/a.sav", None, StateInfo(VMState.SHUTOFF, "destroyed")) == (
        "cannot restore /s/a.sav: the VM has run since it was saved (it is shut off "
        "(destroyed) now), so its disk has moved on and that RAM would corrupt it. Boot "
        "the VM normally, or remove the file")


# -- identity: another file at the path is not the image on record --------------------------

def test_a_save_records_the_file_so_a_later_file_at_its_path_is_judged_afresh(
        lifecycle: Lifecycle, tmp_path: Path) -> None:
    path = tmp_path / "r.sav"
    lifecycle.save("vm-running", path)
    lifecycle.restore(path, host="t")
    lifecycle.destroy("vm-running")
    with pytest.raises(errors.InvalidTransition, match="restored already"):
        lifecycle.restore(path, host="t")
    _another_save_at(lifecycle, path)
    # not virtlife's image: judged by the VM's state alone (saved, not run since)
    assert lifecycle.restore(path, host="t").state.state is VMState.RUNNING


def test_a_reconciled_save_records_the_file_too(lifecycle: Lifecycle, tmp_path: Path) -> None:
    """A save whose process died before recording it: the reconciled row holds the
    file's identity as the save's own would."""
    path = tmp_path / "k.sav"
    _raw(lifecycle, "vm-running").save(str(path))  # libvirt finished it; the process died
    _images(lifecycle).saving(op_id="dead00000001", uuid=RUNNING, host="t",
                              vm="vm-running", path=str(path))
    [settled] = lifecycle.saved.reconcile()
    row = _images(lifecycle).of_vm(RUNNING)[0]
    assert (settled.op_id, row.status, row.why) == (
        "dead00000001", ImageStatus.SAVED,
        "the save completed after its process ended (reconciled)")
    lifecycle.restore(path, host="t")
    lifecycle.destroy("vm-running")
    with pytest.raises(errors.InvalidTransition, match="restored already"):
        lifecycle.restore(path, host="t")
    _another_save_at(lifecycle, path)
    assert lifecycle.restore(path, host="t").state.state is VMState.RUNNING


# -- restore: what the host says of the VM, and the VM's other images --------------------------

def test_a_vm_run_outside_virtlife_since_its_save_is_not_restored(lifecycle: Lifecycle,
                                                                 tmp_path: Path) -> None:
    path = tmp_path / "r.sav"
    lifecycle.save("vm-running", path)
    guest = _raw(lifecycle, "vm-running")
    guest.start()  # `virsh start`: virtlife's row still says saved
    guest.destroy()
    with pytest.raises(errors.InvalidTransition) as refused:
        lifecycle.restore(path, host="t")
    assert str(refused.value) == restore_refusal(
        str(path), None, StateInfo(VMState.SHUTOFF, "destroyed"))
    assert path.exists()


def test_a_restore_makes_the_vms_other_saved_images_stale_saying_why(
        fleet_of: Make, tmp_path: Path) -> None:
    lc = fleet_of(("a", NODE_URI), ("b", NODE_URI))  # the same VMs (same UUIDs)
    first, second = tmp_path / "a.sav", tmp_path / "b.sav"
    lc.save("a/vm-running", first)
    lc.save("b/vm-running", second)
    restored = lc.restore(first, host="a")
    lc.destroy("a/vm-running")
    with pytest.raises(errors.InvalidTransition) as refused:
        lc.restore(second, host="b")
    assert (f"cannot restore {second}: it is stale (vm-running was restored from {first} "
            f"(operation {restored.op_id}))") in str(refused.value)
    assert lc.state("b/vm-running")[1].state is VMState.SAVED


# -- start: what it discards and says ------------------------------------------------------

def test_discard_saved_names_every_image_it_made_stale(fleet_of: Make,
                                                       tmp_path: Path) -> None:
    lc = fleet_of(("a", NODE_URI), ("b", NODE_URI))
    first, second = tmp_path / "a.sav", tmp_path / "b.sav"
    lc.save("a/vm-running", first)
    lc.save("b/vm-running", second)
    started = lc.start("a/vm-running", discard_saved=True)
    assert started.note == (f"discarded the saved image {second}, {first} (now stale: "
                            "never restore it)")


def test_the_stale_image_of_a_discarding_start_says_which_start(lifecycle: Lifecycle,
                                                                tmp_path: Path) -> None:
    path = tmp_path / "r.sav"
    lifecycle.save("vm-running", path)
    started = lifecycle.start("vm-running", discard_saved=True)
    lifecycle.destroy("vm-running")
    with pytest.raises(errors.InvalidTransition) as refused:
        lifecycle.restore(path, host="t")
    assert (f"it is stale (start --discard-saved booted vm-running fresh (operation "
            f"{started.op_id}))") in str(refused.value)


def test_discard_saved_with_only_a_restored_image_discards_nothing(lifecycle: Lifecycle,
                                                                   tmp_path: Path) -> None:
    path = tmp_path / "r.sav"
    lifecycle.save("vm-running", path)
    lifecycle.restore(path, host="t")
    lifecycle.destroy("vm-running")
    started = lifecycle.start("vm-running", discard_saved=True)
    assert started.state.state is VMState.RUNNING and started.note == ""


@pytest.mark.parametrize("journalled", [True, False], ids=["with-store", "without-store"])
def test_a_start_with_no_saved_image_has_nothing_to_say(store: Store,
                                                        journalled: bool) -> None:
    fleet = Fleet([HostRef("t", NODE_URI)], journal=store.journal if journalled else None)
    try:
        lc = Lifecycle(fleet, store.journal if journalled else None)
        started = lc.start("vm-off")
        assert started.state.state is VMState.RUNNING and started.note == ""
    finally:
        fleet.close()


@pytest.mark.parametrize("host", ["c", "gone"], ids=["unreachable", "not-in-inventory"])
def test_an_image_on_a_host_that_cannot_be_asked_still_refuses_a_start(
        fleet_of: Make, host: str) -> None:
    lc = fleet_of(("t", NODE_URI), ("c", DOWN_URI))
    images = _images(lc)
    images.saving(op_id="away00000001", uuid=OFF, host=host, vm="vm-off",
                  path="/var/lib/saves/off.sav")
    images.settle("away00000001", ImageStatus.SAVED)
    with pytest.raises(errors.InvalidTransition) as refused:
        lc.start("t/vm-off")
    assert f"it was saved to /var/lib/saves/off.sav on {host} " in str(refused.value)
    assert lc.state("t/vm-off")[1].state is VMState.SHUTOFF
    assert images.of_vm(OFF)[0].status is ImageStatus.SAVED


# -- reconcile: each row it can settle, with the reason -----------------------------------------

def test_a_save_that_made_no_file_says_so(lifecycle: Lifecycle, tmp_path: Path) -> None:
    _images(lifecycle).saving(op_id="gone00000001", uuid=RUNNING, host="t", vm="vm-running",
                              path=str(tmp_path / "never.sav"))
    [settled] = lifecycle.saved.reconcile()
    row = _images(lifecycle).of_vm(RUNNING)[0]
    assert (settled.op_id, row.status, row.why) == (
        "gone00000001", ImageStatus.FAILED, "no save image was written (reconciled)")


@pytest.mark.parametrize("uuid", [OFF, NOWHERE], ids=["vm-defined", "vm-not-defined"])
def test_a_file_that_is_no_save_image_is_a_failed_save(lifecycle: Lifecycle, tmp_path: Path,
                                                       uuid: str) -> None:
    path = tmp_path / "junk.sav"
    path.write_bytes(b"not a libvirt save image\n" * 64)
    _images(lifecycle).saving(op_id="junk00000001", uuid=uuid, host="t", vm="vm-off",
                              path=str(path))
    assert [i.op_id for i in lifecycle.saved.reconcile()] == ["junk00000001"]
    row = _images(lifecycle).of_vm(uuid)[0]
    assert (row.status, row.why) == (ImageStatus.FAILED,
                                     "not a complete save image (reconciled)")
    assert lifecycle.start("vm-off").state.state is VMState.RUNNING


def test_another_vms_save_image_at_the_path_is_no_save_of_this_vm(lifecycle: Lifecycle,
                                                                  tmp_path: Path) -> None:
    path = tmp_path / "r.sav"
    lifecycle.save("vm-running", path)  # vm-running's image, virtlife's own row
    _images(lifecycle).saving(op_id="dead00000002", uuid=OFF, host="t", vm="vm-off",
                              path=str(path))
    lifecycle.saved.reconcile()
    assert _images(lifecycle).of_vm(OFF)[0].status is ImageStatus.FAILED
    assert lifecycle.start("vm-off").state.state is VMState.RUNNING


def _held_back_by_a_live_save(lc: Lifecycle, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    assert lc.journal is not None
    lc.journal.begin(op_id="held00000001", host="t", vm="vm-off", operation="save",
                     actor=Actor("x"), lock_key=None, uuid=OFF)
    _images(lc).saving(op_id="held00000001", uuid=OFF, host="t", vm="vm-off",
                       path=str(tmp_path / "live.sav"))


def _held_back_by_libvirt_writing(lc: Lifecycle, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "partial.sav"
    path.write_bytes(b"\0" * 4096)  # what libvirt has written so far: no header yet
    monkeypatch.setattr(Guest, "job", lambda self: "save")  # its save job still runs
    _images(lc).saving(op_id="held00000001", uuid=OFF, host="t", vm="vm-off",
                       path=str(path))


def _held_back_by_an_unreachable_host(lc: Lifecycle, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _images(lc).saving(op_id="held00000001", uuid=OFF, host="c", vm="vm-off",
                       path="/var/lib/saves/off.sav")


@pytest.mark.parametrize("hold", [_held_back_by_a_live_save, _held_back_by_libvirt_writing,
                                  _held_back_by_an_unreachable_host],
                         ids=["process-alive", "libvirt-still-writing", "host-unreachable"])
def test_a_save_that_cannot_be_settled_yet_holds_back_no_other(
        fleet_of: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        hold: Callable[[Lifecycle, Path, pytest.MonkeyPatch], None]) -> None:
    lc = fleet_of(("t", NODE_URI), ("c", DOWN_URI))
    images = _images(lc)
    # the older row, of a save whose process died and that wrote nothing
    images.saving(op_id="dead00000003", uuid=RUNNING, host="t", vm="vm-running",
                  path=str(tmp_path / "never.sav"))
    hold(lc, tmp_path, monkeypatch)  # the newer row: reconciled first
    assert [i.op_id for i in images.unsettled()] == ["held00000001", "dead00000003"]
    assert [i.op_id for i in lc.saved.reconcile()] == ["dead00000003"]
    assert [i.op_id for i in images.unsettled()] == ["held00000001"]
    assert images.of_vm(RUNNING)[0].status is ImageStatus.FAILED
