"""The state an operator should see, from libvirt's state plus what the journal knows.

libvirt alone cannot tell two things apart: a shutdown that is merely in progress
from one that is stuck (``dying``), and a VM shut off by ``save FILE`` from one whose
managed-save image was removed afterwards (libvirt keeps the reason "saved" in both).
The journal of our own operations settles both. Without a journal, libvirt's view is
returned as it is.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from virtlife.hypervisor import Guest
from virtlife.states import (
    REASON_MANAGED_SAVE_REMOVED,
    REASON_SAVED_TO_FILE,
    Operation,
    StateInfo,
    VMState,
    shutdown_aged,
)

if TYPE_CHECKING:
    from virtlife.store.journal import Journal

MANAGED_SAVE_REMOVED = StateInfo(VMState.SHUTOFF, REASON_MANAGED_SAVE_REMOVED)


def observed_state(guest: Guest, journal: Journal | None,
                   current: StateInfo | None = None) -> StateInfo:
    """``current`` is libvirt's view when the caller has just read it (saves a call)."""
    current = current if current is not None else guest.status()
    if journal is None:
        return current
    vm, host = guest.name, guest.host.name
    if current.state is VMState.SHUTDOWN:
        last = journal.last(vm, host, Operation.SHUTDOWN.value)
        if last is not None:
            return shutdown_aged(current, (datetime.now(UTC) - last.started_at).total_seconds())
    if current.state is VMState.SAVED and current.reason == REASON_SAVED_TO_FILE:
        removed = journal.last(vm, host, Operation.MANAGEDSAVE_REMOVE.value)
        saved = journal.last(vm, host, Operation.SAVE.value)
        if removed is not None and removed.outcome == "ok" and (
                saved is None or saved.started_at < removed.started_at):
            return MANAGED_SAVE_REMOVED
    return current
