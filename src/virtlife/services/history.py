"""A VM's history: its journal rows by UUID, and the rows of its name that carry none.

Most rows name the VM by UUID, and ``history VM`` follows that UUID across hosts and
renames. Some are written before the VM was looked up, so without one: a refusal
because the host could not be reached, a ``create`` refused because the name is taken.
Those belong to whichever VM had that name on that host at the time, which the rows
that do carry a UUID tell (``holder_of``): the VM of the nearest identified row before
it (none once that VM was undefined), else of the nearest one after it, else the VM
that has the name now. A row of another VM that once had the name is never shown.
Pure decisions over rows read here; it never writes the journal.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from virtlife.states import Operation

if TYPE_CHECKING:
    from virtlife.store.journal import Journal, JournalEntry

# How many rows under one (name, host) are read to place the rows without a UUID.
NAMED_ROWS_READ = 1000


def _order(entry: JournalEntry) -> tuple[datetime, int]:
    return entry.started_at, entry.id


def holder_of(rows: Sequence[JournalEntry], current_uuid: str) -> dict[int, str]:
    """For each row without a UUID among ``rows`` (all of one name on one host), the
    UUID of the VM that had the name then (``current_uuid``: the VM that has it now)."""
    ordered = sorted(rows, key=_order)
    holders: dict[int, str] = {}
    before: str | None = None  # the VM that had the name at this point, if known
    waiting: list[int] = []  # rows without a UUID before any VM is known
    for row in ordered:
        if row.uuid:
            for row_id in waiting:
                holders[row_id] = row.uuid
            waiting = []
            ended = row.operation == Operation.UNDEFINE.value and row.outcome == "ok"
            before = None if ended else row.uuid
        elif before is not None:
            holders[row.id] = before
        else:
            waiting.append(row.id)
    for row_id in waiting:  # after every identified row: the VM of that name now
        holders[row_id] = current_uuid
    return holders


def vm_history(journal: Journal, uuid: str, name: str, host: str,
               limit: int) -> list[JournalEntry]:
    """The rows of VM ``uuid`` (now ``name`` on ``host``), newest first: those by its
    UUID, and the rows without one that ``holder_of`` gives it, under each (name, host)
    it has rows as and under its present ones."""
    mine = journal.list(uuid=uuid, limit=limit)
    places = {(e.vm, e.host) for e in mine} | {(name, host)}
    found = {e.id: e for e in mine}
    for vm, where in sorted(places):
        named = journal.list(vm=vm, host=where, limit=NAMED_ROWS_READ)
        holders = holder_of(named, uuid)
        found.update((e.id, e) for e in named if holders.get(e.id) == uuid)
    return sorted(found.values(), key=_order, reverse=True)[:limit]
