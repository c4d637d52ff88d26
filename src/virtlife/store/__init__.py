"""virtlife's persistent state: the host inventory and the operations journal, in SQLite
or PostgreSQL.

``open_store()`` opens the file (``config.store_path()`` by default) or the PostgreSQL
database a URL names (``VIRTLIFE_DB``, ``[store] url``) and returns a ``Store`` with
``.hosts`` (``Inventory`` of ``HostRecord``) and ``.journal`` (``Journal`` of
``JournalEntry``). This package uses the standard library's ``sqlite3``, and psycopg
only for PostgreSQL (``pg``): it must not import libvirt, talk to hosts, or import from
``services``, ``cli`` or ``api`` (data flows down into it, never up out of it). The names below are
imported from their modules on first use (PEP 562): a module that needs one table's
module does not load the others.
"""

from __future__ import annotations

from virtlife.lazyexports import lazy_exports

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from virtlife.store.db import Store, open_store
    from virtlife.store.inventory import HostRecord, Inventory
    from virtlife.store.journal import Journal, JournalEntry

__all__ = ["HostRecord", "Inventory", "Journal", "JournalEntry", "Store", "open_store"]

# Where each exported name lives (a module of this package).
_HOMES = {"Store": "db", "open_store": "db", "HostRecord": "inventory",
          "Inventory": "inventory", "Journal": "journal", "JournalEntry": "journal"}


__getattr__ = lazy_exports(__name__, _HOMES)
