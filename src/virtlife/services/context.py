"""One object holding what a front end needs: store, fleet, operations, lifecycle, the
agent, snapshots, migrations and consoles, each built (and its modules imported) only
when a command first uses it: ``virtlife list`` never loads the migration code.

The CLI builds one per command; the REST API builds one per process. With
``connect_uri`` the fleet is that single libvirt URI (like ``virsh -c``) and a store
that cannot be opened only costs the journal (a warning), never the command; otherwise
the fleet is the inventory's hosts, re-read as it changes, or the implicit local host
while the inventory is empty.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

from virtlife import config, errors
from virtlife.lazylog import get_logger
from virtlife.services.fleet import Fleet, HostRef
from virtlife.services.uripolicy import stored_refusal
from virtlife.store import Store, open_store

if TYPE_CHECKING:
    from virtlife.services.agent import GuestAgent
    from virtlife.services.consoles import Consoles
    from virtlife.services.freeze import FreezeGuard
    from virtlife.services.leadership import Leadership
    from virtlife.services.lifecycle import Lifecycle
    from virtlife.services.maintenance import Maintenance
    from virtlife.services.migration.service import Migrations
    from virtlife.services.operations import Jobs, Operations
    from virtlife.services.snapshots import Snapshots
    from virtlife.store.facts import Facts
    from virtlife.store.journal import Actor, Journal, JournalEntry

log = get_logger(__name__)  # logging imported only when needed
T = TypeVar("T")


class Services:
    """The services over one fleet and store; each is built (and its modules imported)
    on first use, so that a command pays only for what it calls."""

    def __init__(self, store: Store | None, fleet: Fleet, connect_uri: str | None, *,
                 actor: Actor | None = None, settings: config.Settings | None = None,
                 warnings: list[str] | None = None) -> None:
        self.store = store
        self.fleet = fleet
        self.connect_uri = connect_uri
        self.actor = actor
        self.settings = settings if settings is not None else config.Settings()
        self.warnings = warnings if warnings is not None else []  # what the user should know
        # each part is built once, also when two server threads ask for it at once: two
        # ``Operations`` would each hold their own "one operation per VM" lock
        self._parts: dict[str, object] = {}
        self._lock = threading.RLock()
        # Ctrl-C's latch: set by ``interrupted``, no snapshot of these services starts
        # (also one whose service is built after it)
        self.stopping = threading.Event()

    def _part(self, name: str, build: Callable[[], T]) -> T:
        with self._lock:
            if name not in self._parts:
                self._parts[name] = build()
            return cast(T, self._parts[name])

    @property
    def journal(self) -> Journal | None:
        return self.store.journal if self.store is not None else None

    @property
    def guard(self) -> FreezeGuard:
        def build() -> FreezeGuard:
            from virtlife.services import freeze

            return freeze.FreezeGuard(self.journal,
                                      self.store.freezes if self.store is not None else None)

        return self._part("guard", build)

    @property
    def operations(self) -> Operations:
        def build() -> Operations:
            from virtlife.services.operations import Operations

            return Operations(self.journal, self.actor, on_touch=self.guard.recover)

        return self._part("operations", build)

    @property
    def lifecycle(self) -> Lifecycle:
        def build() -> Lifecycle:
            from virtlife.services.lifecycle import Lifecycle

            return Lifecycle(self.fleet, self.journal, operations=self.operations,
                             sync_time=self.settings.sync_time)

        return self._part("lifecycle", build)

    @property
    def jobs(self) -> Jobs:
        def build() -> Jobs:
            from virtlife.services.operations import Jobs

            return Jobs(self.journal)

        return self._part("jobs", build)

    @property
    def agent(self) -> GuestAgent:
        def build() -> GuestAgent:
            from virtlife.services.agent import GuestAgent

            return GuestAgent(self.fleet, self.operations, self.guard)

        return self._part("agent", build)

    @property
    def snapshots(self) -> Snapshots:
        def build() -> Snapshots:
            from virtlife.services.snapshots import Snapshots

            return Snapshots(self.fleet, self.operations, self.guard, self.settings,
                             oneplace=self.lifecycle.oneplace,  # reverts check the fleet
                             stopping=self.stopping)

        return self._part("snapshots", build)

    @property
    def migrations(self) -> Migrations:
        def build() -> Migrations:
            from virtlife.services.migration.service import Migrations

            return Migrations(self.fleet, self.operations, self.lifecycle)

        return self._part("migrations", build)

    @property
    def maintenance(self) -> Maintenance:
        """Host maintenance and evacuation (needs the store); its moves go through a
        migration service of its own, so that cancelling an evacuation aborts its moves
        and no others."""
        def build() -> Maintenance:
            from virtlife.services.maintenance import Maintenance
            from virtlife.services.migration.service import Migrations
            from virtlife.services.placement import PlacementLimits

            return Maintenance(self.fleet, self.need_store(), self.operations,
                               Migrations(self.fleet, self.operations, self.lifecycle),
                               PlacementLimits.from_settings(self.settings))

        return self._part("maintenance", build)

    @property
    def consoles(self) -> Consoles:
        def build() -> Consoles:
            from virtlife.services.consoles import Consoles

            return Consoles(self.fleet, self.operations)

        return self._part("consoles", build)

    @property
    def leadership(self) -> Leadership:
        """This process's part in electing the supervisors' leader (not started: ``serve
        --supervise`` starts it); needs the store."""
        def build() -> Leadership:
            from virtlife.services.leadership import Leadership
            from virtlife.store.journal import Actor

            return Leadership(self.need_store(), actor=Actor.current("supervisor"))

        return self._part("leadership", build)

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

    def settle_migrations(self, entries: list[JournalEntry] | None = None) -> int:
        """Ask the hosts how migrations ended that no process saw end: ``entries`` (rows
        the sweep just marked interrupted), or by default the rows whose end was left
        unconfirmed; their journal rows are corrected. How many were."""
        if self.store is None:
            return 0
        from virtlife.services.migration import settle
        from virtlife.services.migration.ending import UNCONFIRMED

        journal = self.store.journal
        try:
            rows = entries if entries is not None else journal.marked(settle.MIGRATIONS,
                                                                      UNCONFIRMED)
            return settle.reconcile(self.fleet, journal, rows)
        except errors.StoreUnavailable as err:
            log.info("cannot settle the journal's migrations: %s", err)
            return 0

    def _built(self, name: str) -> object | None:
        """The part ``name`` if it was built; never builds it, nor waits for the lock
        (Ctrl-C must not wait behind a part being built)."""
        return self._parts.get(name)

    def interrupted(self) -> int:
        """Thaw the guests these services froze, say which of their snapshots libvirt
        made anyway (``Snapshots.interrupt_creates``), abort their migrations, and mark
        their running operations ``interrupted`` (Ctrl-C); how many operations.

        Only what these services started is touched: another ``Services`` in the process
        (a test's, a server's) keeps its freezes, snapshots, migrations and running
        journal rows, and so the VMs those rows hold. A row whose process ends without
        this is found by the next process's sweep (``Journal.sweep``). A part never
        built has frozen or started nothing: it is not built now.
        """
        self.stopping.set()
        guard = cast("FreezeGuard | None", self._built("guard"))
        thawed = guard.in_flight.thaw_all() if guard is not None else 0
        if thawed:
            log.warning("thawed %d guest(s) frozen by an interrupted operation", thawed)
        snapshots = cast("Snapshots | None", self._built("snapshots"))
        for said in snapshots.interrupt_creates() if snapshots is not None else ():
            log.warning("%s", said)
        maintenance = cast("Maintenance | None", self._built("maintenance"))
        if maintenance is not None and maintenance.cancel_running():
            log.warning("cancelled the evacuation: its running migrations were aborted")
        migrations = cast("Migrations | None", self._built("migrations"))
        aborted = migrations.abort_running() if migrations is not None else 0
        if aborted:
            log.warning("aborted %d migration(s) of an interrupted operation", aborted)
        operations = cast("Operations | None", self._built("operations"))
        if self.store is None or operations is None:
            return 0
        try:  # only the rows of operations these services run: another's go on
            return self.store.journal.interrupt_mine(op_ids=operations.running_rows())
        except errors.StoreUnavailable as err:
            log.warning("cannot mark interrupted operations: %s", err)
            return 0

    def close(self, *, wait: bool = True) -> None:
        """``wait=False``: the process is ending; host connections are not awaited."""
        self.fleet.close(wait=wait)
        if self.store is not None:
            self.store.close()

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def host_refs(store: Store | None, connect_uri: str | None) -> list[HostRef]:
    """The fleet's hosts; a ``--connect`` URI keeps the inventory's name for it, if any.

    An inventory host whose URI the policy refuses (``services.uripolicy``: added before
    virtlife checked URIs, or into a store written by other means) is listed with the
    reason, and never opened, unless it was added with ``--allow-any-uri``. A
    ``--connect`` URI is the operator's own, typed on their command line: it is opened
    as it is.
    """
    known: list[HostRef] = []
    if store is not None:
        try:
            records = store.hosts.effective()
        except errors.StoreUnavailable:
            if not connect_uri:
                raise
            records = []
        allow_test = config.allow_test_uris()
        known = [HostRef(r.name, r.uri, None if r.any_uri or connect_uri else
                         stored_refusal(r.name, r.uri, allow_test=allow_test))
                 for r in records]
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
    cut_off: list[JournalEntry] = []
    if store is not None:
        try:
            for entry in store.journal.sweep():
                log.info("operation %s was cut off: marked interrupted", entry.op_id)
                cut_off.append(entry)
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
    services = Services(store, fleet, connect_uri, actor=actor, settings=settings,
                        warnings=warnings)
    if any(e.operation.startswith("migrate") for e in cut_off):
        # a migration whose process died goes on in libvirt: say where the VM is now
        services.settle_migrations([e for e in cut_off if e.operation.startswith("migrate")])
    return services
