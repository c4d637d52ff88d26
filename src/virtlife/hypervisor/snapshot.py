"""``DomainSnapshots`` and ``Snapshot``: thin wrappers of one domain's libvirt snapshots.

``DomainSnapshots(guest)`` makes the domain-level calls (create, list, look up,
revert), reaching the libvirt domain as ``hypervisor.agent`` does (``guest._dom``);
``Snapshot`` wraps one ``virDomainSnapshot`` (its XML, whether it is current, its
children, delete). Every libvirt error is translated: the refusals libvirt 9.0 makes
for external (disk-only) snapshots become ``errors.Unsupported`` saying what works
instead, a missing snapshot ``errors.NotFound``, a taken name ``errors.AlreadyExists``,
and the rest goes through ``libvirt_api.translate``. Nothing here decides whether a
call is allowed, freezes the guest or waits for anything: ``services.snapshots`` does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from virtlife import errors
from virtlife.hypervisor.libvirt_api import libvirt, translate
from virtlife.hypervisor.part import DomainPart

if TYPE_CHECKING:
    from virtlife.hypervisor.guest import Guest

# What libvirt 9.0 says when it cannot do something with external snapshots (its
# qemu driver's messages; newer versions can do some of these and then never say it),
# and what the user is told instead: what works, or what to do first.
_REVERT_EXTERNAL = "revert to external snapshot not supported"
_DELETE_UNDER_INTERNAL = "external snapshot that has internal snapshot as parent"
_DELETE_EXTERNAL_CHILDREN = "deletion of external children disk snapshots not supported"
_DELETE_OFF_CHAIN = "could not find base disk source in disk source chain"
_DELETE_INTERNAL_OFF_CHAIN = "is not the same as disk image currently used by VM"


def _refusal(text: str, *, vm: str, snapshot: str, host: str) -> errors.VirtlifeError | None:
    """The clear error a libvirt refusal about external snapshots stands for; None when
    ``text`` is not one of them."""
    if _REVERT_EXTERNAL in text:  # refused by what the snapshot is: exit 3, as a state
        return errors.InvalidTransition(
            f"cannot revert {vm} to snapshot {snapshot}: it is an external (disk-only) "
            f"snapshot, and libvirt on {host} cannot revert to those yet; revert to an "
            "internal snapshot instead (one taken without --disk-only or --quiesce)")
    if _DELETE_UNDER_INTERNAL in text:
        return errors.Unsupported(
            f"cannot delete snapshot {snapshot} of {vm}: libvirt cannot merge an external "
            "snapshot whose parent is an internal one; drop only its metadata with "
            "--metadata-only (the VM goes on writing to its overlay file, as now)")
    if _DELETE_INTERNAL_OFF_CHAIN in text:
        return errors.Unsupported(
            f"cannot delete snapshot {snapshot} of {vm}: it is an internal snapshot in a "
            "disk image the VM no longer writes to (an external snapshot put an overlay "
            f"on it since); revert to {snapshot} first, or drop only its metadata with "
            "--metadata-only (it then stays inside the image)")
    if _DELETE_EXTERNAL_CHILDREN in text:
        return errors.Unsupported(
            f"cannot delete snapshot {snapshot} of {vm} with its children: some of them are "
            "external (disk-only) snapshots, which libvirt deletes only one at a time; "
            f"delete those first, newest first, then {snapshot}")
    if _DELETE_OFF_CHAIN in text:
        return errors.Unsupported(
            f"cannot delete snapshot {snapshot} of {vm}: it is an external snapshot whose "
            "overlay file the VM no longer uses (it was reverted to an earlier snapshot "
            f"since); drop its metadata with --metadata-only (the overlay file stays on "
            "the host, for you to remove)")
    return None


@contextmanager
def _calling(what: str, *, vm: str, snapshot: str, host: str) -> Iterator[None]:
    """Run a libvirt snapshot call, re-raising its error as the clearest virtlife one."""
    try:
        yield
    except libvirt.libvirtError as err:
        text = err.get_error_message() or str(err)
        code = err.get_error_code()
        if code == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
            raise errors.NotFound(
                f"{vm} on {host} has no snapshot {snapshot}; `virtlife snapshot {vm} list` "
                "lists them") from err
        if code == libvirt.VIR_ERR_OPERATION_FAILED and "already exists" in text:
            raise errors.AlreadyExists(
                f"cannot {what}: {vm} already has a snapshot {snapshot}; choose another "
                "name") from err
        refused = _refusal(text, vm=vm, snapshot=snapshot, host=host)
        if refused is not None:
            raise refused from err
        raise translate(err, what, vm=vm) from err


class Snapshot:
    """One snapshot of one domain (a ``virDomainSnapshot``)."""

    def __init__(self, guest: Guest, snap: Any) -> None:
        self.guest = guest
        self._snap = snap
        self.name: str = snap.getName()

    def __repr__(self) -> str:
        return f"Snapshot({self.guest.host.name}/{self.guest.name}@{self.name})"

    def _calling(self, verb: str) -> Any:
        return _calling(f"{verb} snapshot {self.name} of {self.guest.name} on "
                        f"{self.guest.host.name}", vm=self.guest.name, snapshot=self.name,
                        host=self.guest.host.name)

    def xml(self) -> str:
        """libvirt's ``<domainsnapshot>`` (``xml.snapshot.parse_snapshot`` reads it)."""
        with self._calling("read"):
            return str(self._snap.getXMLDesc(0))

    def is_current(self) -> bool:
        with self._calling("inspect"):
            return bool(self._snap.isCurrent(0))

    def descendants(self) -> list[str]:
        """The names of its children, their children and so on."""
        with self._calling("list the children of"):
            return [str(s.getName()) for s in self._snap.listAllChildren(
                libvirt.VIR_DOMAIN_SNAPSHOT_LIST_DESCENDANTS)]

    def children(self) -> list[str]:
        with self._calling("list the children of"):
            return [str(s.getName()) for s in self._snap.listAllChildren(0)]

    def delete(self, *, children: bool = False, metadata_only: bool = False) -> None:
        """Delete it; its children hang from its parent after (libvirt merges what it
        kept into them), or with ``children`` go too. ``metadata_only``: libvirt forgets
        it, and its data (internal snapshot, overlay files) stays."""
        flags = (libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_CHILDREN if children else 0) | (
            libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY if metadata_only else 0)
        with self._calling("delete"):
            self._snap.delete(flags)


class DomainSnapshots(DomainPart):
    """The snapshots of one domain: create, list, look up, revert."""

    def __init__(self, guest: Guest) -> None:
        super().__init__(guest)
        self._where = f"{guest.name} on {guest.host.name}"

    def _calling(self, what: str, snapshot: str = "") -> Any:
        return _calling(what, vm=self.vm, snapshot=snapshot, host=self.guest.host.name)

    def create(self, xml: str, name: str, *, disk_only: bool = False) -> Snapshot:
        """Take the snapshot ``xml`` (named ``name``) describes; ``disk_only`` makes it
        external: each disk gets an overlay file beside it that the VM writes to from
        now on. All disks or none (atomic)."""
        flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC | (
            libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY if disk_only else 0)
        with self._calling(f"take snapshot {name} of {self._where}", name):
            snap = self._dom.snapshotCreateXML(xml, flags)
        return Snapshot(self.guest, snap)

    def all(self) -> list[Snapshot]:
        with self._calling(f"list the snapshots of {self._where}"):
            found = self._dom.listAllSnapshots(0)
        return [Snapshot(self.guest, s) for s in found]

    def lookup(self, name: str) -> Snapshot:
        """The snapshot ``name``; ``errors.NotFound`` when the VM has none of that name."""
        with self._calling(f"find snapshot {name} of {self._where}", name):
            snap = self._dom.snapshotLookupByName(name, 0)
        return Snapshot(self.guest, snap)

    def find(self, name: str) -> Snapshot | None:
        try:
            return self.lookup(name)
        except errors.NotFound:
            return None

    def revert(self, snapshot: Snapshot) -> None:
        """Bring the VM back to ``snapshot``: its disks, and its memory and state when it
        has them (a shut-off snapshot stops the VM)."""
        with self._calling(f"revert {self._where} to snapshot {snapshot.name}", snapshot.name):
            self._dom.revertToSnapshot(snapshot._snap, 0)
