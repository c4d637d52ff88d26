"""One object holding what a front end needs: store, fleet, operations, lifecycle, the
agent, snapshots, migrations and consoles.

The CLI builds one per command; the REST API builds one per process. With
``connect_uri`` the fleet is that single libvirt URI (like ``virsh -c``) and a store
that cannot be opened only costs the journal (a warning), never the command; otherwise
the fleet is the inventory's hosts, re-read as it changes, or the implicit local host
while the inventory is empty.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from virtlife import config, errors
from virtlife.services import freeze
from virtlife.services.agent import GuestAgent
from virtlife.services.consoles import Consoles
from virtlife.services.fleet import Fleet, HostRef
from virtlife.services.lifecycle import Lifecycle
from virtlife.services.migration.service import Migrations
from virtlife.services.migration.service import abort_active as abort_migrations
from virtlife.services.operations import Jobs, Operations
from virtlife.services.snapshots import Snapshots
from virtlife.store import Store, open_store
from virtlife.store.facts import Facts
from virtlife.store.journal import Actor

log = logging.getLogger(__name__)


@dataclass
class Services:
    store: Store | None
    fleet: Fleet
    lifecycle: Lifecycle
    connect_uri: str | None
    jobs: Jobs
    agent: GuestAgent
    snapshots: Snapshots
    migrations: Migrations
    consoles: Consoles
    settings: config.Settings = field(default_factory=config.Settings)
    warnings: list[str] = field(default_factory=list)  # what the user should know

    def default_host(self) -> str:
        """The host to act on when none is named: the only one, else an error."""
        names = sorted(self.fleet.refs)
        if len(names) == 1:
            return names[0]
        raise errors.HostNotFound(
            "several hosts are configured (" + ", ".join(names) + "); name one with --host")

    @property
    def facts(self) -> Facts | None:
        """Where host facts are recorded (None without a store: kept for the process)."""
        return self.store.facts if self.store is not None else None

    def need_store(self) -> Store:
        """The store, for commands that cannot work without it (inventory, history)."""
        if self.store is None:
            raise errors.StoreUnavailable(self.warnings[0] if self.warnings else
                                          "the virtlife store is not open")
        return self.store

    def interrupted(self) -> int:
        """Thaw the guests this process froze, abort its migrations, and mark its running
        operations ``interrupted`` (Ctrl-C); how many operations."""
        thawed = freeze.thaw_active()
        if thawed:
            log.warning("thawed %d guest(s) frozen by an interrupted operation", thawed)
        aborted = abort_migrations()
        if aborted:
            log.warning("aborted %d migration(s) of an interrupted operation", aborted)
        if self.store is None:
            return 0
        try:
            return self.store.journal.interrupt_mine()
        except errors.StoreUnavailable as err:
            log.warning("cannot mark interrupted operations: %s", err)
            return 0

    def close(self) -> None:
        self.fleet.close()
        if self.store is not None:
            self.store.close()

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def host_refs(store: Store | None, connect_uri: str | None) -> list[HostRef]:
    """The fleet's hosts; a ``--connect`` URI keeps the inventory's name for it, if any."""
    known: list[HostRef] = []
    if store is not None:
        try:
            known = [HostRef(r.name, r.uri) for r in store.hosts.effective()]
        except errors.StoreUnavailable:
            if not connect_uri:
                raise
    if connect_uri:
        named = [h for h in known if h.uri == connect_uri]
        return named[:1] or [HostRef(connect_uri, connect_uri)]
    return known


def open_services(connect_uri: str | None = None, *, store_path: Path | None = None,
                  connect_timeout_s: float | None = None,
                  actor: Actor | None = None) -> Services:
    warnings: list[str] = []
    store: Store | None
    try:
        store = open_store(store_path)
    except errors.StoreUnavailable as err:
        if not connect_uri:
            raise
        store = None
        warnings.append(f"{err} (continuing without the journal)")
    if store is not None:
        try:
            for entry in store.journal.sweep():
                log.info("operation %s was cut off: marked interrupted", entry.op_id)
        except errors.StoreUnavailable as err:  # read-only: reads still work
            log.info("journal sweep skipped: %s", err)
    kwargs = {} if connect_timeout_s is None else {"connect_timeout_s": connect_timeout_s}
    journal = store.journal if store is not None else None
    if connect_uri or store is None:
        fleet = Fleet(host_refs(store, connect_uri), journal=journal, **kwargs)
    else:  # the inventory's hosts, re-read as they change while the process runs
        fleet = Fleet(lambda: host_refs(store, None), journal=journal, **kwargs)
    try:
        settings = config.load_settings()
    except errors.InvalidInput as err:
        settings = config.Settings()
        warnings.append(f"{err} (using the defaults)")
    guard = freeze.FreezeGuard(journal, store.freezes if store is not None else None)
    ops = Operations(journal, actor, on_touch=guard.recover)
    lifecycle = Lifecycle(fleet, journal, operations=ops, sync_time=settings.sync_time)
    return Services(store, fleet, lifecycle, connect_uri, Jobs(journal),
                    GuestAgent(fleet, ops, guard), Snapshots(fleet, ops, guard, settings),
                    Migrations(fleet, ops, lifecycle), Consoles(fleet, ops),
                    settings, warnings)
