"""Moving the store to PostgreSQL: what ``virtlife store migrate URL`` does.

Opens the SQLite file (never creating one: a missing file is an error) and the
PostgreSQL database the URL names (creating its schema), and has ``store.move`` copy
every table across. It neither changes nor removes the file: the operator points
``VIRTLIFE_DB`` or ``[store] url`` at the database once it is copied.
"""

from __future__ import annotations

from pathlib import Path

from virtlife import config
from virtlife.errors import InvalidInput
from virtlife.store.db import is_postgresql, open_store
from virtlife.store.move import copy_store
from virtlife.store.sql import redacted


def move_store(url: str, source: Path | None = None) -> dict[str, int]:
    """Copy the SQLite store ``source`` (default: this user's) into the empty PostgreSQL
    database ``url``; the rows copied per table."""
    if not is_postgresql(url):
        raise InvalidInput(
            f"cannot move the store to {redacted(url)}: give a PostgreSQL URL, "
            "postgresql://USER@HOST/DATABASE")
    path = source if source is not None else config.store_path()
    if not path.is_file():
        raise InvalidInput(
            f"there is no store file at {path} to move: give --from FILE, or set "
            "VIRTLIFE_HOME to the directory that holds virtlife.db")
    with open_store(path) as sqlite_store, open_store(url) as pg_store:
        return copy_store(sqlite_store, pg_store)
