"""Save images against libvirt's test driver: a VM saved to a file is never booted fresh
over that RAM, and a stale image (the VM ran since) is never restored (issue 15 A).

The data loss itself (a restored page cache over a disk that moved on) needs a real
guest: tests/integration/test_saved_images_real.py. Here: the rules, the records, the
reconciliation of a save whose process died, and the pure verdicts.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from virtlife import errors
from virtlife.services.lifecycle import Lifecycle
from virtlife.services.saved import on_record, restore_refusal, start_refusal
from virtlife.states import StateInfo, VMState
from virtlife.store.images import ImageStatus, SavedImage, SavedImages
from virtlife.store.journal import Actor, this_process

UUID = "11111111-1111-1111-1111-111111111111"  # vm-running in tests/data/node.xml


def _images(lc: Lifecycle) -> SavedImages:
    assert lc.saved.images is not None
    return lc.saved.images


def test_start_after_save_is_refused_and_names_the_file(lifecycle: Lifecycle,
                                                        tmp_path: Path) -> None:
    path = tmp_path / "r.sav"
    saved = lifecycle.save("vm-running", path)
    with pytest.raises(errors.InvalidTransition) as refused:
        lifecycle.start("vm-running")
    text = str(refused.value)
    assert str(path) in text and saved.op_id in text
    assert f"virtlife restore {path} --host t" in text
    assert "start vm-running --discard-saved" in text
    assert refused.value.exit_code == 3
    assert str(lifecycle.state("vm-running")[1]) == "saved (saved to file)"
    # the refusal is journalled as one
    assert lifecycle.history("vm-running")[0].outcome == "refused"


def test_discard_saved_boots_fresh_and_the_image_is_stale(lifecycle: Lifecycle,
                                                          tmp_path: Path) -> None:
    path = tmp_path / "r.sav"
    lifecycle.save("vm-running", path)
    started = lifecycle.start("vm-running", discard_saved=True)
    assert started.state.state is VMState.RUNNING
    assert f"discarded the saved image {path}" in started.note
    [image] = _images(lifecycle).of_vm(UUID)
    assert image.status is ImageStatus.STALE and started.op_id in image.why
    lifecycle.destroy("vm-running")
    with pytest.raises(errors.InvalidTransition, match="it is stale") as refused:
        lifecycle.restore(path, host="t")
    assert "moved on" in str(refused.value)
    assert path.exists()  # refused: nothing touched


def test_an_image_restores_once(lifecycle: Lifecycle, tmp_path: Path) -> None:
    path = tmp_path / "r.sav"
    lifecycle.save("vm-running", path)
    restored = lifecycle.restore(path, host="t")
    assert restored.state.state is VMState.RUNNING
    [image] = _images(lifecycle).of_vm(UUID)
    assert image.status is ImageStatus.RESTORED and restored.op_id in image.why
    lifecycle.destroy("vm-running")
    with pytest.raises(errors.InvalidTransition, match="restored already"):
        lifecycle.restore(path, host="t")


def test_restoring_one_image_makes_the_others_stale(lifecycle: Lifecycle,
                                                    tmp_path: Path) -> None:
    first, second = tmp_path / "1.sav", tmp_path / "2.sav"
    lifecycle.save("vm-running", first)
    lifecycle.restore(first, host="t")
    lifecycle.save("vm-running", second)
    lifecycle.restore(second, host="t")
    status = {i.path: i.status for i in _images(lifecycle).of_vm(UUID)}
    assert status == {str(first): ImageStatus.RESTORED, str(second): ImageStatus.RESTORED}


def test_a_start_after_the_file_is_gone_goes_ahead(lifecycle: Lifecycle,
                                                   tmp_path: Path) -> None:
    path = tmp_path / "r.sav"
    lifecycle.save("vm-running", path)
    path.unlink()
    assert lifecycle.start("vm-running").state.state is VMState.RUNNING
    [image] = _images(lifecycle).of_vm(UUID)
    assert image.status is ImageStatus.STALE and "is gone" in image.why


def test_a_killed_save_is_reconciled_from_the_file(lifecycle: Lifecycle,
                                                   tmp_path: Path) -> None:
    """A save whose process died left its row 'saving' and its journal row running;
    libvirt finished the image. The next start finds it and refuses."""
    path = tmp_path / "k.sav"
    lifecycle.save("vm-running", path)
    images = _images(lifecycle)
    assert lifecycle.journal is not None
    # what a SIGKILLed `virtlife save` leaves: its rows as they were while it ran
    dead = "deadbeef0001"
    images.saving(op_id=dead, uuid=UUID, host="t", vm="vm-running", path=str(path))
    images.settle(images.of_vm(UUID)[-1].op_id, ImageStatus.FAILED, "as if never recorded")
    lifecycle.journal.begin(op_id=dead, host="t", vm="vm-running", operation="save",
                            actor=Actor("x"), lock_key=None, uuid=UUID)
    lifecycle.journal.finish(dead, "interrupted", "interrupted: its process ended", 1.0)
    with pytest.raises(errors.InvalidTransition, match=str(path)):
        lifecycle.start("vm-running")
    row = next(i for i in images.of_vm(UUID) if i.op_id == dead)
    assert row.status is ImageStatus.SAVED and "reconciled" in row.why


def test_a_save_still_running_is_not_reconciled(lifecycle: Lifecycle, tmp_path: Path) -> None:
    images = _images(lifecycle)
    assert lifecycle.journal is not None
    lifecycle.journal.begin(op_id="live00000001", host="t", vm="vm-off", operation="save",
                            actor=Actor("x"), lock_key=None,
                            uuid="44444444-4444-4444-4444-444444444444")
    images.saving(op_id="live00000001", uuid="44444444-4444-4444-4444-444444444444",
                  host="t", vm="vm-off", path=str(tmp_path / "none.sav"))
    assert this_process() == lifecycle.journal.get("live00000001").process  # type: ignore[union-attr]
    assert lifecycle.saved.reconcile() == []
    assert images.unsettled()[0].op_id == "live00000001"


def test_a_save_that_made_no_file_is_reconciled_as_failed(lifecycle: Lifecycle,
                                                          tmp_path: Path) -> None:
    images = _images(lifecycle)
    images.saving(op_id="gone00000001", uuid=UUID, host="t", vm="vm-running",
                  path=str(tmp_path / "never.sav"))
    [settled] = lifecycle.saved.reconcile()
    assert settled.op_id == "gone00000001"
    assert images.of_vm(UUID)[0].status is ImageStatus.FAILED
    assert lifecycle.start("vm-off").state.state is VMState.RUNNING


def test_managed_save_start_still_restores_it(lifecycle: Lifecycle) -> None:
    """A managed save is libvirt's own: start restores it, never refused."""
    lifecycle.managedsave("vm-running")
    assert lifecycle.start("vm-running").state.state is VMState.RUNNING


# -- the pure verdicts ---------------------------------------------------------------

def _image(status: ImageStatus, **kw: object) -> SavedImage:
    fields: dict[str, object] = dict(op_id="op1", uuid=UUID, host="h", vm="v",
                                     path="/s/v.sav",
                                     saved_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
                                     status=status, why="because")
    fields.update(kw)
    return SavedImage(**fields)  # type: ignore[arg-type]


def test_start_refusal_counts_only_saved_images() -> None:
    assert start_refusal("v", [_image(ImageStatus.STALE), _image(ImageStatus.RESTORED),
                               _image(ImageStatus.FAILED)]) is None
    text = start_refusal("v", [_image(ImageStatus.SAVED)])
    assert text is not None and "/s/v.sav on h (saved 2026-01-02 03:04:05 UTC" in text


@pytest.mark.parametrize(("state", "refused"), [
    (None, False),
    (StateInfo(VMState.SAVED, "saved"), False),
    (StateInfo(VMState.SHUTOFF, "unknown"), False),  # a libvirtd restart proves nothing
    (StateInfo(VMState.SHUTOFF, "destroyed"), True),
    (StateInfo(VMState.SHUTOFF, "shutdown"), True),
    (StateInfo(VMState.RUNNING, "booted"), True),
    (StateInfo(VMState.PAUSED, "user"), True),
])
def test_restore_refusal_by_the_vms_state_now(state: StateInfo | None, refused: bool) -> None:
    assert (restore_refusal("/p", None, state) is not None) is refused


def test_another_file_at_the_path_is_not_the_image_on_record() -> None:
    image = _image(ImageStatus.STALE, size=10, mtime_ns=20)
    assert on_record(image, (10, 20)) is image
    assert on_record(image, (11, 20)) is None
    assert on_record(image, None) is image  # cannot tell: the record stands
    assert restore_refusal("/p", on_record(image, (10, 21)), None) is None
    assert restore_refusal("/p", on_record(image, (10, 20)), None) is not None
