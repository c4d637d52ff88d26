"""One VM, one host: before an operation makes a VM run, the fleet is asked for its UUID.

Two QEMUs of one VM (same UUID, same MAC, same disks) corrupt its disk the moment both
write, and on shared block storage or NFS without locking nothing below us stops the
second. ``start``, ``restore``, ``resume``, ``define`` (and a start from a managed save)
therefore ask every other host of the inventory, at once and within the fleet's
deadline, whether it has that UUID running or paused, and refuse if one has (exit 3,
naming the host).

An error is never evidence: a host that cannot be asked makes the answer "unknown"
when virtlife last saw this VM there (the journal's rows for the UUID, or a copy a
migration left there), and unknown refuses too, unless ``--ignore-unreachable``. An
unreachable host that never held the VM does not block it: one host down for
maintenance must not stop every start in the fleet.

A definition a migration left behind (``--keep-source``, or a post-copy that
completed late) is marked (``store.images.LeftCopy``): starting that copy is refused
the same way, naming where the VM went, until it migrates back or is defined anew.

The verdict is a pure function (``verdict``); ``OnePlace`` gathers its inputs. The
check reads the hosts live, also under ``virtlife serve``: a lookup by UUID per host is
one round trip, and a cache fed by events could lag behind a start made a moment ago
on another host, which is exactly the case this guards. Nothing here prints.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import TYPE_CHECKING

from virtlife import errors
from virtlife.hypervisor import Host
from virtlife.states import Operation, StateInfo

if TYPE_CHECKING:
    from virtlife.services.fleet import Fleet
    from virtlife.store.images import LeftCopy, SavedImages
    from virtlife.store.journal import Journal

# The journal rows after which the VM is surely gone from a host: an undefine there, a
# migration from there that completed (its row names the source host).
_GONE_AFTER = frozenset({Operation.UNDEFINE.value, Operation.MIGRATE.value,
                         Operation.MIGRATE_OFFLINE.value})


@dataclass(frozen=True)
class Sightings:
    """What the other hosts said of one UUID."""

    states: Mapping[str, StateInfo]  # host -> the VM's state there (defined there)
    unreachable: Mapping[str, str]  # host -> why it could not be asked
    held_before: Set[str]  # hosts where virtlife last saw this VM defined


def verdict(vm: str, here: str, seen: Sightings, *, ignore_unreachable: bool,
            doing: str = "start") -> str | None:
    """Why ``vm`` may not run on ``here``; None if it may."""
    running = sorted(h for h, s in seen.states.items() if h != here and s.state.is_active)
    if running:
        where = ", ".join(f"{h} ({seen.states[h]})" for h in running)
        return (f"cannot {doing} {vm} on {here}: the same VM (same UUID) is active on "
                f"{where}; two copies would corrupt its disk. Stop it there first, or "
                f"migrate it here")
    unknown = sorted(h for h in seen.unreachable if h != here and h in seen.held_before)
    if unknown and not ignore_unreachable:
        why = "; ".join(f"{h}: {seen.unreachable[h]}" for h in unknown)
        return (f"cannot {doing} {vm} on {here}: whether it runs on {', '.join(unknown)} "
                f"is unknown (virtlife last saw it defined there, and the host cannot be "
                f"asked: {why}). Check that host, or pass --ignore-unreachable if you know "
                "it does not run there")
    return None


def copy_refusal(vm: str, here: str, copy: LeftCopy, doing: str = "start") -> str:
    return (f"cannot {doing} {vm} on {here}: this is the copy a migration left behind "
            f"({copy.why}, operation {copy.op_id}); the VM lives on {copy.moved_to} now. "
            f"Start it there, migrate it back here, or undefine this copy")


def _state_of(uuid: str, host: Host) -> StateInfo | None:
    guest = host.find_uuid(uuid)
    return guest.status() if guest is not None else None


class OnePlace:
    """The fleet-wide check, with what the journal and the left-copy marks know."""

    def __init__(self, fleet: Fleet, journal: Journal | None,
                 images: SavedImages | None) -> None:
        self.fleet = fleet
        self.journal = journal
        self.images = images

    def held_before(self, uuid: str) -> set[str]:
        """The hosts where virtlife last saw ``uuid`` defined: each host whose newest
        journal row for it is not a completed undefine or migration away, and each host
        a migration put it on or left a copy of it on. A journal that cannot be read: none known."""
        hosts: set[str] = set()
        try:
            if self.journal is not None:
                for host, entry in self.journal.newest_by_host(uuid).items():
                    if not (entry.operation in _GONE_AFTER and entry.outcome == "ok"):
                        hosts.add(host)
            if self.images is not None:
                hosts.update(self.images.places_of(uuid))
        except errors.StoreUnavailable:
            pass
        return hosts

    def sightings(self, uuid: str, here: str) -> Sightings:
        others = [name for name in sorted(self.fleet.refs) if name != here]
        if not others:
            return Sightings({}, {}, set())
        found, problems = self.fleet.each_host(lambda h: _state_of(uuid, h), others)
        states = {h: s for h, s in found.items() if s is not None}
        unreachable = {p.host: p.message for p in problems}
        held = self.held_before(uuid) if unreachable else set()
        return Sightings(states, unreachable, held)

    def check(self, uuid: str, vm: str, here: str, *, ignore_unreachable: bool = False,
              doing: str = "start", copies: bool = True) -> str:
        """Refuse (``InvalidTransition``) when ``uuid`` is active, or may be, on another
        host, or (with ``copies``) when ``here`` holds a left-behind copy of it; return
        what to tell the operator ("" if nothing)."""
        if not uuid:
            return ""
        seen = self.sightings(uuid, here)  # a copy active elsewhere is said first
        refusal = verdict(vm, here, seen, ignore_unreachable=ignore_unreachable,
                          doing=doing)
        if refusal is not None:
            raise errors.InvalidTransition(refusal)
        copy = self._left_copy(uuid, here) if copies else None
        if copy is not None:
            raise errors.InvalidTransition(copy_refusal(vm, here, copy, doing))
        skipped = sorted(h for h in seen.unreachable if h in seen.held_before)
        if skipped:
            return (f"not checked on {', '.join(skipped)} (unreachable; "
                    "--ignore-unreachable)")
        return ""

    def moved(self, uuid: str, vm: str, *, source: str, dest: str, op_id: str,
              kept_source: bool, why: str = "") -> None:
        """A migration of ``uuid`` from ``source`` to ``dest`` completed: it arrived at
        ``dest``; the definition at ``source`` (when kept) is a left-behind copy."""
        if self.images is None:
            return
        try:
            self.images.arrived(uuid=uuid, host=dest, vm=vm, came_from=source, op_id=op_id)
            if kept_source:
                self.images.leave_copy(uuid=uuid, host=source, vm=vm, moved_to=dest,
                                       op_id=op_id,
                                       why=why or f"migrated to {dest} with --keep-source")
            else:
                self.images.forget_place(uuid, source)
        except errors.StoreUnavailable:
            pass  # the journal's warning says the store could not record it

    def defined_anew(self, uuid: str, host: str) -> None:
        """The operator defined ``uuid`` on ``host`` anew (or undefined it there): a mark
        a migration left there no longer applies."""
        if self.images is None:
            return
        try:
            self.images.forget_place(uuid, host)
        except errors.StoreUnavailable:
            pass

    def _left_copy(self, uuid: str, here: str) -> LeftCopy | None:
        if self.images is None:
            return None
        try:
            return self.images.left_copy(uuid, here)
        except errors.StoreUnavailable:
            return None
