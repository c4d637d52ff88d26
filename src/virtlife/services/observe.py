"""The state an operator should see, from libvirt's state plus what the journal knows.

libvirt alone cannot tell two things apart: a shutdown that is merely in progress
from one that is stuck (``dying``), and a VM shut off by ``save FILE`` from one whose
managed-save image was removed afterwards (libvirt keeps the reason "saved" in both).
The journal of our own operations settles both. Without a journal, libvirt's view is
returned as it is; a journal that cannot be read is the same as none (the state is
libvirt's, never an error). It never changes a VM.

The age of "in shutdown" is measured only from a shutdown request made to *this run*
of the VM: one newer than its last journalled start, and, when the request recorded
libvirt's domain id, made while the domain had the id it has now (every start gets a
new one, also a start made outside virtlife). A guest that powers itself off a day
after an earlier shutdown request is in shutdown, not dying.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from virtlife import errors
from virtlife.hypervisor import Guest
from virtlife.states import (
    REASON_MANAGED_SAVE_REMOVED,
    Operation,
    SaveKind,
    StateInfo,
    VMState,
    shutdown_aged,
)

if TYPE_CHECKING:
    from virtlife.services.fleet import Fleet
    from virtlife.store.journal import Journal, JournalEntry

MANAGED_SAVE_REMOVED = StateInfo(VMState.SHUTOFF, REASON_MANAGED_SAVE_REMOVED)

# Operations after which a VM runs afresh: a shutdown asked before them is over.
_STARTS = [Operation.START.value, Operation.RESTORE.value, Operation.RESET.value,
           Operation.REBOOT.value, Operation.PMWAKEUP.value]
# Outcomes of a shutdown request that may still be in progress (a refusal never is).
_PENDING = ("running", "ok", "error", "interrupted")


def _shutdown_of_this_run(guest: Guest, journal: Journal, uuid: str) -> JournalEntry | None:
    vm, host = guest.name, guest.host.name
    asked = journal.last(vm, host, Operation.SHUTDOWN.value, uuid=uuid)
    if asked is None or asked.outcome not in _PENDING:
        return None
    started = journal.last(vm, host, _STARTS, uuid=uuid)
    if started is not None and started.outcome != "refused" and (
            started.started_at >= asked.started_at):
        return None
    if asked.domid is not None and guest.domain_id() != asked.domid:
        return None  # the domain was started again since (by us or by another tool)
    return asked


def observed_state(guest: Guest, journal: Journal | None,
                   current: StateInfo | None = None) -> StateInfo:
    """``current`` is libvirt's view when the caller has just read it (saves a call)."""
    current = current if current is not None else guest.status()
    if journal is None:
        return current
    if current.state is not VMState.SHUTDOWN and current.save_kind is not SaveKind.TO_FILE:
        return current
    try:
        uuid = guest.uuid()
        if current.state is VMState.SHUTDOWN:
            asked = _shutdown_of_this_run(guest, journal, uuid)
            if asked is not None:
                age = (datetime.now(UTC) - asked.started_at).total_seconds()
                return shutdown_aged(current, age)
            return current
        vm, host = guest.name, guest.host.name
        removed = journal.last(vm, host, Operation.MANAGEDSAVE_REMOVE.value, uuid=uuid)
        saved = journal.last(vm, host, Operation.SAVE.value, uuid=uuid)
    except errors.StoreUnavailable:
        return current
    if removed is not None and removed.outcome == "ok" and (
            saved is None or saved.started_at < removed.started_at):
        return MANAGED_SAVE_REMOVED
    return current


def current_state(fleet: Fleet, journal: Journal | None, ref: str) -> tuple[str, StateInfo]:
    """The host and observed state of the VM ``ref`` (``NAME`` or ``HOST/NAME``): what
    ``virtlife state`` prints, read without loading the lifecycle operations."""
    guest = fleet.resolve(ref)
    return guest.host.name, observed_state(guest, journal)
