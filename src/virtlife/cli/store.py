"""``virtlife store migrate URL``: move the store from its SQLite file into PostgreSQL.

Thin over ``services.storemove``; it prints the rows copied per table and what to set
to use the database.
"""

from __future__ import annotations

from pathlib import Path

import click

from virtlife.cli.app import emit_json, json_option
from virtlife.cli.params import CheckedPath


@click.group()
def store() -> None:
    """The store of the inventory, journal and tokens (SQLite file or PostgreSQL).

    Example: virtlife store migrate postgresql://virtlife@db1/virtlife
    """


@store.command()
@click.argument("url", metavar="URL")
@click.option("--from", "source", type=CheckedPath(exists=True, dir_okay=False),
              default=None, metavar="FILE",
              help="The SQLite store to copy (default: $VIRTLIFE_HOME/virtlife.db).")
@json_option
def migrate(url: str, source: Path | None, as_json: bool) -> None:
    """Copy the SQLite store into the empty PostgreSQL database URL.

    Every table is copied (hosts, journal, tokens, facts, freezes, save images...) in
    one transaction; a database that holds rows already is refused, so running it
    again copies nothing. The file is left as it is: then set VIRTLIFE_DB=URL (or
    `url` under [store] in settings.toml) on every machine.

    Example: virtlife store migrate postgresql://virtlife@db1/virtlife
    """
    from virtlife.services.storemove import move_store
    from virtlife.store.sql import redacted

    counts = move_store(url, source)
    if as_json:
        emit_json({"url": redacted(url), "copied": counts})
        return
    width = max(len(t) for t in counts) if counts else 0
    for table, count in counts.items():
        click.echo(f"{table:<{width}}  {count}")
    click.echo(f"copied {sum(counts.values())} rows into {redacted(url)}; to use it, set "
               f"VIRTLIFE_DB={redacted(url)} (or [store] url in settings.toml)", err=True)
