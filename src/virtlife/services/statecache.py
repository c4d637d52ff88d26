"""The server's event-fed cache of VM rows, and the answers it gives from them.

``StateCache`` holds each host's VMs (state, vCPUs, memory) as one listing left them
when the host's event stream (re)connected, kept up to date by re-reading a VM after
each of its lifecycle events. A VM is keyed by its UUID, its name an attribute: a
renamed VM is the same row, and a new VM under an old name is another. Its owner
(the API's ``Feed``) calls ``host_event`` and ``vm_event`` on the event threads, and
``fill``/``refresh`` on its workers, one host at a time each (a host's reads go
through that host's caller with a deadline, so a frozen host delays only its own).

It never answers with a state older than the last event received:

- a host is served from the cache only while its stream is ``connected`` and a listing
  completed since that connection (``fresh``); otherwise its part is read live;
- a VM with an event whose re-read has not finished yet (``pending``) is read live;
- states that change without a lifecycle event are always read live: ``in shutdown``
  (it turns ``dying`` with age), ``saved`` (``managedsave-remove`` sends no event) and
  ``idle``/``dying`` (libvirt's scheduler view), each through ``observed_state`` with
  the journal, as ``virtlife state`` does; a managed-saved VM is confirmed by its
  host's managed-save list (one round trip per host), and read again only when its
  image is gone. Listings that ask at once share one such round trip, one that started
  after each of them asked (``virtlife.coalesce``).

The managed-save lists are the one bounded staleness, and only in what a listing
*shows*: an image appears only through an event (a ``managedsave`` stops the VM with
reason ``saved``), and any event of a host drops that host's list, so a new image is
never missed; an image removed without an event (``managedsave-remove``, its file
deleted) may still show as ``saved`` for up to ``saved_max_age_s`` (a list asked no
longer ago than that, by the clock ``clock``, is used; the owner re-asks them in the
background with ``check_saved``, so a listing normally waits for no host; an image this
server's API removes is told with ``forget_saved``, one another process removes shows
within the bound). No action
depends on it: ``start``, ``undefine`` and the rest read the VM's state on the host
when they begin (``Operations.run`` through ``observed_state``, ``Guest.has_managed_save``),
and ``virtlife state`` of a managed-saved VM is read live (``state`` below).

A live read that fails reports the host unreachable as the direct listing does; so
does a host whose managed-save list cannot be read within the listing's deadline (its
rows are left out, the other hosts' still come from the cache: before, one such host
made the whole listing be read live, which under load missed more hosts). A
vCPU count changed by a live hot-plug (no lifecycle event) shows after the VM's next
event. It holds no libvirt object and never prints.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from virtlife import errors
from virtlife.coalesce import Coalesced
from virtlife.hypervisor import Host
from virtlife.hypervisor.listing import managed_saved
from virtlife.services.fleet import (
    Fleet,
    FleetListing,
    HostProblem,
    VMRow,
    as_uuid,
    rows_of,
    split_ref,
)
from virtlife.states import SaveKind, StateInfo, VMState

log = logging.getLogger(__name__)

# States that change only with a lifecycle event: the cache may answer them.
CACHEABLE = frozenset({VMState.RUNNING, VMState.PAUSED, VMState.SHUTOFF, VMState.CRASHED,
                       VMState.PMSUSPENDED})
# How old a host's managed-save list may be when a listing shows it (see the module doc).
SAVED_MAX_AGE_S = 10.0


@dataclass(frozen=True)
class Answer:
    """A listing, the hosts read live for it (their streams not fresh) and how many
    VMs were read live (a pending event, or a state that changes without one)."""

    listing: FleetListing
    live_hosts: list[str]
    live_vms: int

    @property
    def source(self) -> str:
        """``cache`` (no host read live), ``live`` (every host) or ``mixed``."""
        if not self.live_hosts:
            return "cache"
        return "live" if not self.listing.answered or set(self.live_hosts) >= set(
            self.listing.answered) | {p.host for p in self.listing.unreachable} else "mixed"


def _read_row(host: Host, uuid: str) -> VMRow | None:
    """The VM ``uuid`` of ``host`` as a row, read now; None once it is gone."""
    try:
        guest = host.find_uuid(uuid)
        if guest is None:
            return None
        info = guest.info()
    except errors.VMNotFound:
        return None
    return VMRow(host.name, guest.name, info.state, info.vcpus, info.max_memory_mib,
                 info.persistent, uuid)


class StateCache:
    def __init__(self, fleet: Fleet, *, clock: Callable[[], float] = time.monotonic,
                 saved_max_age_s: float = SAVED_MAX_AGE_S) -> None:
        self.fleet = fleet
        self.clock = clock
        self.saved_max_age_s = saved_max_age_s
        self._lock = threading.Lock()
        self._rows: dict[str, dict[str, VMRow]] = {}  # host -> VM UUID -> row (raw state)
        self._links: dict[str, str] = {}  # host -> its last connection event
        self._generation: dict[str, int] = {}  # host -> connection events so far
        self._fresh: set[str] = set()  # listed since the stream last connected
        self._pending: dict[tuple[str, str], int] = {}  # (host, UUID): re-reads due
        # the hosts' managed-save lists, one call for every listing that asked before
        # it started (``coalesce``: never a call that began before the listing did)
        self._saved = Coalesced(self._managed_saved)
        # host -> (``clock`` when its managed-save list was asked, the list); dropped by
        # any event of the host. ``_events``: events per host so far, so that a list
        # asked before an event is not kept after it.
        self._saved_seen: dict[str, tuple[float, frozenset[str]]] = {}
        self._events: dict[str, int] = {}

    def _managed_saved(self, hosts: tuple[str, ...]
                       ) -> tuple[dict[str, set[str]], list[HostProblem]]:
        with self._lock:
            asked, events = self.clock(), {h: self._events.get(h, 0) for h in hosts}
        found, failed = self.fleet.each_host(managed_saved, list(hosts),
                                             deadline_s=self.fleet.list_deadline_s)
        with self._lock:
            for host, names in found.items():
                if self._events.get(host, 0) == events[host]:
                    self._saved_seen[host] = (asked, frozenset(names))
        return found, failed

    def _saved_lists(self, hosts: set[str]
                     ) -> tuple[dict[str, frozenset[str]], list[HostProblem]]:
        """The managed-save lists of ``hosts``: those asked within ``saved_max_age_s``
        as they are, the others asked now (one coalesced round trip)."""
        now = self.clock()
        lists: dict[str, frozenset[str]] = {}
        with self._lock:
            for host in hosts:
                seen = self._saved_seen.get(host)
                if seen is not None and now - seen[0] <= self.saved_max_age_s:
                    lists[host] = seen[1]
        missing = tuple(sorted(hosts - set(lists)))
        if not missing:
            return lists, []
        found, failed = self._saved(missing)
        return lists | {h: frozenset(n) for h, n in found.items()}, failed

    def check_saved(self) -> None:
        """Ask again the managed-save lists of the hosts with managed-saved VMs in the
        cache (the owner calls this in the background, more often than
        ``saved_max_age_s``); a host that does not answer is left to the next listing."""
        with self._lock:
            hosts = tuple(sorted(
                host for host, rows in self._rows.items() if host in self._fresh
                and any(r.state.save_kind is SaveKind.MANAGED for r in rows.values())))
        if hosts:
            self._saved(hosts)

    def forget_saved(self, host: str) -> None:
        """``host``'s managed-save list may have changed without an event (this server
        removed an image): the next listing asks it again."""
        with self._lock:
            self._event(host)

    def _event(self, host: str) -> None:  # under the lock
        self._events[host] = self._events.get(host, 0) + 1
        self._saved_seen.pop(host, None)

    # -- fed by the events ---------------------------------------------------------------

    def host_event(self, host: str, event: str) -> None:
        """A host's stream ``connected``, ``disconnected``, ``unreachable`` or ``removed``;
        until ``fill`` lists it after a connection, the host is read live."""
        with self._lock:
            self._event(host)
            self._links[host] = event
            self._generation[host] = self._generation.get(host, 0) + 1
            self._fresh.discard(host)
            if event == "removed":
                self._rows.pop(host, None)

    def vm_event(self, host: str, uuid: str) -> None:
        """A lifecycle event of the VM ``uuid`` on ``host``: read live until ``refresh``
        re-reads it."""
        with self._lock:
            self._event(host)
            self._pending[(host, uuid)] = self._pending.get((host, uuid), 0) + 1

    # -- the readers ---------------------------------------------------------------------

    def fill(self, host: str) -> None:
        """List ``host`` (after its stream connected); fresh if no host event came since.

        The listing runs on the host's caller (``Fleet.each_host``) with its deadline: a
        host that froze meanwhile holds this thread no longer than that."""
        with self._lock:
            generation, events = self._generation.get(host, 0), self._events.get(host, 0)
            asked = self.clock()
        try:
            found, problems = self.fleet.each_host(
                lambda h: rows_of(h, self.fleet.journal, observe=False), [host])
        except errors.VirtlifeError as err:
            log.info("cannot list %s for the state cache: %s", host, err)
            return
        if problems:
            log.info("cannot list %s for the state cache: %s", host, problems[0].message)
            return
        rows = found[host]
        with self._lock:
            if (self._generation.get(host, 0) != generation
                    or self._links.get(host) != "connected"):
                return  # the stream dropped (or reconnected) meanwhile: the next fill will do
            self._rows[host] = {row.uuid: row for row in rows}
            self._fresh.add(host)
            if self._events.get(host, 0) == events:  # its managed-save list, as read
                self._saved_seen[host] = (asked, frozenset(
                    row.name for row in rows if row.state.save_kind is SaveKind.MANAGED))

    def refresh(self, host: str, uuid: str) -> tuple[VMRow | None, StateInfo]:
        """Re-read the VM ``uuid`` of ``host`` after its event: its row (None once it
        is gone from the host) and state (then ``undefined``)."""
        with self._lock:
            seen = self._pending.get((host, uuid), 0)
        row: VMRow | None = None
        failed = False
        try:  # on the host's caller, with its deadline (see ``fill``)
            found, problems = self.fleet.each_host(partial(_read_row, uuid=uuid), [host])
        except errors.VirtlifeError as err:
            found, problems = {}, [HostProblem(host, "", str(err))]
        if problems:
            log.info("state of the VM %s on %s after an event: %s", uuid, host,
                     problems[0].message)
            failed = True  # leave it pending: answered live until a later read works
        else:
            row = found[host]
        with self._lock:
            if not failed:
                left = self._pending.get((host, uuid), 0) - seen
                if left > 0:
                    self._pending[(host, uuid)] = left
                else:
                    self._pending.pop((host, uuid), None)
                rows = self._rows.setdefault(host, {})
                if row is None:
                    rows.pop(uuid, None)
                else:
                    rows[uuid] = row
        if failed:
            raise errors.HostUnreachable(
                f"cannot read the state of the VM {uuid} on host {host}")
        return row, row.state if row is not None else StateInfo(VMState.UNDEFINED, "")

    # -- answers -------------------------------------------------------------------------

    def fresh(self, host: str | None = None) -> bool:
        """Whether ``host`` (default: every host) may be answered from the cache now."""
        try:
            names = [host] if host is not None else sorted(self.fleet.refs)
        except errors.VirtlifeError:
            return False
        with self._lock:
            return bool(names) and all(name in self._fresh for name in names)

    def _usable(self, host: str, row: VMRow) -> bool:
        return row.state.state in CACHEABLE and not self._pending.get((host, row.uuid))

    def state(self, ref: str) -> tuple[str, StateInfo] | None:
        """``ref``'s host and state from the cache, or None when it must be read live
        (not cached, ambiguous, unknown: the live read gives the exact answer or error).
        A UUID is looked for as one first, then as a name, as ``Fleet.resolve`` does."""
        try:
            host, name = split_ref(ref)
            hosts = [host] if host is not None else sorted(self.fleet.refs)
        except errors.VirtlifeError:
            return None
        uuid = as_uuid(name)
        with self._lock:
            if not hosts or any(h not in self._fresh for h in hosts):
                return None
            found = [row for h in hosts if (row := self._rows.get(h, {}).get(uuid or ""))]
            if not found:
                found = [row for h in hosts for row in self._rows.get(h, {}).values()
                         if row.name == name]
            if len(found) != 1 or not self._usable(found[0].host, found[0]):
                return None
            return found[0].host, found[0].state

    def listing(self, *, include_inactive: bool = True, host: str | None = None) -> Answer:
        """The fleet's VMs (``Fleet.list_vms``'s answer), from the cache where it may."""
        refs = self.fleet.refs  # the inventory, read once for the whole listing
        names = [self.fleet.ref_in(refs, host).name] if host is not None else sorted(refs)
        rows: list[VMRow] = []
        stale_rows: list[VMRow] = []
        saved_rows: list[VMRow] = []  # managed-saved, no event since: still saved?
        live: list[str] = []
        with self._lock:
            for name in names:
                if name not in self._fresh:
                    live.append(name)
                    continue
                for row in self._rows.get(name, {}).values():
                    if self._usable(name, row):
                        rows.append(row)
                    elif (row.state.save_kind is SaveKind.MANAGED
                          and not self._pending.get((name, row.uuid))):
                        saved_rows.append(row)
                    else:
                        stale_rows.append(row)
        problems: list[HostProblem] = []
        answered = [n for n in names if n not in live]
        if live:
            found, problems = self.fleet.each_host(
                lambda h: rows_of(h, self.fleet.journal, observe=True), live, refs=refs)
            answered += list(found)
            rows += [row for name in found for row in found[name]]
        if saved_rows:  # one round trip per host: which still have their image
            images, failed = self._saved_lists({row.host for row in saved_rows})
            if failed:  # those hosts are unreachable, as the direct listing says of a
                # host that does not answer within the deadline; the others stand
                down = {p.host for p in failed}
                problems = [*problems, *failed]
                answered = [n for n in answered if n not in down]
                rows = [row for row in rows if row.host not in down]
                stale_rows = [row for row in stale_rows if row.host not in down]
            for row in saved_rows:  # an image removed (no event): its state read again
                if row.host in images:
                    (rows if row.name in images[row.host] else stale_rows).append(row)
        if stale_rows:  # read again live: one bulk read per host that has any
            stale: dict[str, set[str]] = {}
            for row in stale_rows:
                stale.setdefault(row.host, set()).add(row.uuid)
            again, failed = self.fleet.each_host(
                lambda h: rows_of(h, self.fleet.journal, observe=True), sorted(stale),
                deadline_s=self.fleet.list_deadline_s, refs=refs)
            if failed:  # the caller lists live instead, as the direct listing would
                raise errors.HostUnreachable(failed[0].message)
            rows += [row for name in again for row in again[name] if row.uuid in stale[name]]
        if not include_inactive:
            rows = [row for row in rows if row.state.state.is_active]
        rows.sort(key=lambda r: (r.host, r.name))
        return Answer(FleetListing(rows, problems, sorted(answered)), live, len(stale_rows))
