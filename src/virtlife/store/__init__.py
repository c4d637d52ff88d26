"""virtlife's persistent state: the host inventory and the operations journal, in SQLite.

``open_store()`` opens the file (``config.store_path()`` by default) and returns a
``Store`` with ``.hosts`` (``Inventory`` of ``HostRecord``) and ``.journal``
(``Journal`` of ``JournalEntry``). This package uses only the standard library's
``sqlite3``: it must not import libvirt, talk to hosts, or import from ``services``,
``cli`` or ``api`` (data flows down into it, never up out of it).
"""

from virtlife.store.db import Store, open_store
from virtlife.store.inventory import HostRecord, Inventory
from virtlife.store.journal import Journal, JournalEntry

__all__ = ["HostRecord", "Inventory", "Journal", "JournalEntry", "Store", "open_store"]
