"""Save images: never boot a VM over its saved RAM, never restore an image its disk left.

A ``save FILE`` stops the VM with its RAM in FILE; its disk stays as the RAM expects
it. Booting the VM fresh (``start``) drops that RAM, and a later ``restore FILE`` then
brings back a page cache that no longer matches the disk: files vanish and the file
system is damaged. So, while virtlife knows of a ``saved`` image of a VM:

- ``start`` refuses, naming the file (``restore FILE``, or ``start --discard-saved``
  to boot fresh and mark the image stale);
- ``restore`` refuses an image that is stale: the VM ran since the save (a start,
  a restore of another image, an earlier restore of this one: the disk has moved on).

``SavedImageGuard`` is what ``Lifecycle`` calls around those operations; the verdicts
are pure functions (``start_refusal``, ``restore_refusal``) tested without libvirt.
A ``save`` whose process was killed left its row ``saving``; the next process
``reconcile``s it from what the host has at the path (libvirt may have finished it).
Managed saves need none of this: libvirt's own ``start`` restores them.
Nothing here prints; files on a host are asked through libvirt (``hypervisor.files``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from virtlife import errors
from virtlife.hypervisor import Guest, Host
from virtlife.hypervisor.files import local_identity, probe_path
from virtlife.lazylog import get_logger
from virtlife.states import StateInfo, VMState
from virtlife.store.images import ImageStatus, SavedImage, SavedImages
from virtlife.xml.domain import domain_uuid

if TYPE_CHECKING:
    from virtlife.services.fleet import Fleet
    from virtlife.store.journal import Journal

log = get_logger(__name__)

# Shut-off reasons that prove the VM ran after its save (libvirt keeps "saved" until
# the domain starts again; "unknown" after a libvirtd restart proves nothing).
_RAN_SINCE = frozenset({"shutdown", "destroyed", "crashed", "migrated", "failed",
                        "from snapshot", "daemon"})


def start_refusal(vm: str, images: Iterable[SavedImage]) -> str | None:
    """Why ``vm`` may not boot fresh: the ``saved`` images it would drop; None if none."""
    saved = [i for i in images if i.status is ImageStatus.SAVED]
    if not saved:
        return None
    newest = saved[0]
    where = ", ".join(f"{i.path} on {i.host} (saved {i.saved_at:%Y-%m-%d %H:%M:%S} UTC, "
                      f"operation {i.op_id})" for i in saved)
    return (f"cannot start {vm}: it was saved to {where} and has not run since; booting "
            "it fresh would drop that RAM and make the image corrupt its disk later. "
            f"Run `virtlife restore {newest.path} --host {newest.host}`, or "
            f"`virtlife start {vm} --discard-saved` to boot fresh and mark the image stale")


def on_record(image: SavedImage | None,
              identity: tuple[int, int] | None) -> SavedImage | None:
    """``image`` when the file at its path is still it: the same size and mtime where
    both are known; None when another file has taken the path since."""
    if image is not None and identity is not None and image.size is not None and (
            (image.size, image.mtime_ns) != identity):
        return None
    return image


def restore_refusal(path: str, image: SavedImage | None, state: StateInfo | None) -> str | None:
    """Why the image at ``path`` may not be restored; None if it may.

    ``image``: virtlife's row for the file (``on_record``; None: not saved by
    virtlife); ``state``: the VM's state on the host now (None: not defined there)."""
    if image is not None and image.status in (ImageStatus.STALE, ImageStatus.RESTORED):
        how = "it was restored already" if image.status is ImageStatus.RESTORED else (
            "it is stale")
        return (f"cannot restore {path}: {how} ({image.why}); the VM's disk has moved on "
                f"since the save (operation {image.op_id}), and restoring that RAM over it "
                "would corrupt the file system. Boot the VM normally, or remove the file")
    if state is not None and (state.state.is_active or (
            state.state in (VMState.SHUTOFF, VMState.SAVED)
            and state.reason in _RAN_SINCE)):
        return (f"cannot restore {path}: the VM has run since it was saved (it is {state} "
                "now), so its disk has moved on and that RAM would corrupt it. Boot the "
                "VM normally, or remove the file")
    return None


class SavedImageGuard:
    """Keeps ``saved_images`` true to what ``save``, ``start`` and ``restore`` did."""

    def __init__(self, images: SavedImages | None, journal: Journal | None,
                 fleet: Fleet) -> None:
        self.images = images
        self.journal = journal
        self.fleet = fleet

    @staticmethod
    def _safely(what: str, act: Callable[[], object]) -> None:
        """Run a row update; a store that cannot be written is logged, never fatal."""
        try:
            act()
        except errors.StoreUnavailable as err:
            log.warning("saved images: cannot %s: %s", what, err)

    # -- save ------------------------------------------------------------------------

    def saving(self, op_id: str, guest: Guest, path: str) -> None:
        """Before libvirt is asked: the row the next process reconciles if we die."""
        if self.images is not None:
            self.images.saving(op_id=op_id, uuid=guest.uuid(), host=guest.host.name,
                               vm=guest.name, path=path)

    def saved(self, op_id: str, host: Host, path: str) -> None:
        if self.images is None:
            return
        ident = local_identity(host, path)
        images = self.images
        self._safely("record a save", lambda: images.settle(
            op_id, ImageStatus.SAVED, size=ident[0] if ident else None,
            mtime_ns=ident[1] if ident else None))

    def failed(self, op_id: str, why: str) -> None:
        images = self.images
        if images is not None:
            self._safely("record a failed save",
                         lambda: images.settle(op_id, ImageStatus.FAILED, why))

    def reconcile(self) -> list[SavedImage]:
        """Settle each ``saving`` row whose operation no longer runs, from what its host
        has at the path; return the rows settled. A host that cannot be asked leaves
        its rows as they are (an error is no evidence)."""
        if self.images is None:
            return []
        settled = []
        for image in self.images.unsettled():
            if self._still_running(image.op_id):
                continue
            try:
                host = self.fleet.host(image.host)
                found = probe_path(host, image.path)
                if found.exists and found.save_xml and domain_uuid(found.save_xml) == (
                        image.uuid):
                    ident = local_identity(host, image.path)
                    self.images.settle(
                        image.op_id, ImageStatus.SAVED,
                        "the save completed after its process ended (reconciled)",
                        size=ident[0] if ident else None,
                        mtime_ns=ident[1] if ident else None)
                elif found.exists and not found.save_xml:
                    guest = host.find_uuid(image.uuid)
                    if guest is not None and guest.job() is not None:
                        continue  # libvirt is still writing it
                    self.images.settle(image.op_id, ImageStatus.FAILED,
                                       "not a complete save image (reconciled)")
                else:
                    self.images.settle(image.op_id, ImageStatus.FAILED,
                                       "no save image was written (reconciled)")
            except (errors.HostUnreachable, errors.NotFound) as err:
                log.info("cannot reconcile the save %s yet: %s", image.op_id, err)
                continue
            settled.append(image)
        return settled

    def _still_running(self, op_id: str) -> bool:
        if self.journal is None:
            return False
        entry = self.journal.get(op_id)
        return entry is not None and entry.running and not self.journal.ended([entry])

    # -- start -----------------------------------------------------------------------

    def before_start(self, guest: Guest, *, discard: bool, op_id: str) -> str:
        """Refuse a fresh boot over a saved image (``InvalidTransition``), or with
        ``discard`` mark the images stale; return what to tell the operator ("" if
        nothing)."""
        if self.images is None:
            return ""
        self.reconcile()
        uuid = guest.uuid()
        saved = [i for i in self.images.of_vm(uuid, ImageStatus.SAVED) if self._present(i)]
        if discard and saved:
            self.images.ran(uuid, f"start --discard-saved booted {guest.name} fresh "
                                  f"(operation {op_id})")
            return "discarded the saved image " + ", ".join(i.path for i in saved) + (
                " (now stale: never restore it)")
        refusal = start_refusal(guest.name, saved)
        if refusal is not None:
            raise errors.InvalidTransition(refusal)
        return ""

    def _present(self, image: SavedImage) -> bool:
        """Whether the image's file is still on its host; one that is gone is marked
        stale. A host that cannot be asked: present (an error is no evidence)."""
        assert self.images is not None
        try:
            found = probe_path(self.fleet.host(image.host), image.path)
        except (errors.HostUnreachable, errors.NotFound):
            return True
        if found.exists:
            return True
        self.images.settle(image.op_id, ImageStatus.STALE,
                           f"the file {image.path} is gone from {image.host}")
        return False

    # -- restore ---------------------------------------------------------------------

    def before_restore(self, host: Host, path: str, save_xml: str) -> SavedImage | None:
        """Refuse a stale image (``InvalidTransition``); the image's row when virtlife
        saved it."""
        if self.images is None:
            return None
        self.reconcile()
        image = on_record(self.images.at(host.name, path), local_identity(host, path))
        guest = host.find_uuid(domain_uuid(save_xml))
        refusal = restore_refusal(path, image, guest.status() if guest else None)
        if refusal is not None:
            raise errors.InvalidTransition(refusal)
        return image

    def ran(self, uuid: str, why: str, *, restored: SavedImage | None = None) -> None:
        """The VM ran (started, resumed, restored): its saved images are stale from now
        on; the one it was restored from is ``restored``."""
        images = self.images
        if images is None:
            return
        if restored is not None:
            self._safely("record a restore", lambda: images.settle(
                restored.op_id, ImageStatus.RESTORED, why))
        self._safely("mark saved images stale", lambda: images.ran(uuid, why))
