"""The fleet: every configured host, reached concurrently, and VM name resolution.

``Fleet`` keeps one ``Host`` per inventory entry (each owns its one connection, opened
with a deadline and remembered as unreachable for a few seconds after a failure) and
one caller per host (``hostcalls``: the host's calls in turn on a pool shared by every
host; a host that never answers holds one worker, never one more per call), asks
all hosts at once with a deadline so that an unreachable host is reported and never
hides the others (a listing: one bulk read per host, 2 s by default), and resolves
``NAME``, ``UUID``, ``HOST/NAME`` or ``HOST/UUID`` to exactly one ``Guest`` (a UUID
first, as virsh looks a domain up). Given a callable instead of a list, it re-reads
the hosts on each use: a host added to the inventory is seen at once, and a removed
host's connection is closed. It never prints; a bug in a host's call is re-raised,
never reported as an unreachable host.
"""

from __future__ import annotations

import re
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from virtlife import errors
from virtlife.hypervisor import Guest, Host
from virtlife.hypervisor.host import DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_RETRY_AFTER_S
from virtlife.hypervisor.listing import list_domains
from virtlife.lazylog import get_logger
from virtlife.services.hostcalls import Busy, HostCall, HostCaller
from virtlife.services.observe import observed_state
from virtlife.states import StateInfo, VMState

if TYPE_CHECKING:
    from virtlife.store.journal import Journal

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_LIST_DEADLINE_S",
    "DEFAULT_RETRY_AFTER_S",
    "Fleet",
    "FleetListing",
    "HostProblem",
    "HostRef",
    "VMRow",
    "as_uuid",
    "find_ref",
    "rows_of",
    "split_ref",
]

T = TypeVar("T")

logger = get_logger(__name__)  # logging imported only when needed

# How long a listing waits for a host before it shows it unreachable (and returns).
DEFAULT_LIST_DEADLINE_S = 2.0
# each_host waits this long past the connect deadline, so that a connect that timed
# out is reported with its own message rather than as a host that did not answer.
JOIN_GRACE_S = 0.25
# How often each_host looks whether a connect (made in a host's caller turn) has
# passed its deadline, when that deadline may come before each_host's own.
CONNECT_POLL_S = 0.05


@dataclass(frozen=True)
class HostRef:
    """A host as the inventory names it. ``refused``: why its URI must not be opened
    (``services.uripolicy``); its Host then fails every connect with that reason."""

    name: str
    uri: str
    refused: str | None = None


HostSource = Iterable[HostRef] | Callable[[], Iterable[HostRef]]
"""A fixed list of hosts, or a callable that returns the current ones (the inventory)."""


@dataclass(frozen=True, slots=True)
class VMRow:
    host: str
    name: str
    state: StateInfo
    vcpus: int
    memory_mib: int
    persistent: bool
    uuid: str = ""  # what the VM is: its name and host are what it is called and where

    def as_dict(self) -> dict[str, object]:
        return dict(zip(ROW_FIELDS, self.as_list(), strict=True))

    def as_list(self) -> list[object]:
        """``as_dict``'s values in ``ROW_FIELDS`` order (a compact listing's row)."""
        state = self.state.state
        return [self.uuid, self.host, self.name, state.value, state.label,
                self.state.reason, self.vcpus, self.memory_mib, self.persistent]


ROW_FIELDS = ("uuid", "host", "name", "state", "label", "reason", "vcpus", "memory_mib",
              "persistent")
"""The keys of ``VMRow.as_dict``, in the order of ``VMRow.as_list``."""


@dataclass(frozen=True)
class HostProblem:
    host: str
    uri: str
    message: str


@dataclass(frozen=True)
class FleetListing:
    rows: list[VMRow]
    unreachable: list[HostProblem]
    answered: list[str] = field(default_factory=list)  # the hosts that were listed


def _connected_call(host: Host, fn: Callable[[Host], T]) -> T:
    # in the host's caller turn (a pool worker), whose caller (each_host) enforces the
    # deadline: it connects here, with no connect job of its own (see Host.connect)
    host.connect(in_this_thread=True)
    return fn(host)


def _await_call(call: HostCall[T], host: Host, end: float) -> None:
    """Wait until ``call`` is done, ``end`` (monotonic) has come, or the connect that
    the call makes on its thread has passed the host's connect deadline."""
    while True:
        now = time.monotonic()
        if now >= end:
            return
        if host.connect_timeout_s >= end - now:  # no connect deadline can come first
            # Event.wait with a timeout: the caller's thread stays interruptible by Ctrl-C
            call.done.wait(end - now)
            return
        until = host.connecting_until()
        if until is not None and now >= until:
            return
        step = min(end, until if until is not None else end) - now
        if call.done.wait(min(step, CONNECT_POLL_S)):
            return


def split_ref(ref: str) -> tuple[str | None, str]:
    """``"web1"`` -> (None, "web1"); ``"hostA/web1"`` -> ("hostA", "web1").

    Split at the last "/": a host that only ``-c URI`` names is called by its URI
    (``"qemu+tcp://h/system/web1"``), while a VM name never has a "/" (libvirt refuses
    one).
    """
    if not ref.strip():
        raise errors.InvalidInput(f"{ref!r} names no VM: give its name, NAME or HOST/NAME")
    if "/" in ref:
        host, _, name = ref.rpartition("/")
        if not host or not name:
            raise errors.VMNotFound(f"{ref!r} is not a VM name: use NAME or HOST/NAME")
        return host, name
    return None, ref


_UUID_RE = re.compile(r"[0-9a-fA-F]{8}(-?[0-9a-fA-F]{4}){3}-?[0-9a-fA-F]{12}")


def as_uuid(text: str) -> str | None:
    """``text`` as a canonical UUID (lower case, with dashes) when it is one, as virsh
    takes it (with or without dashes); else None."""
    if not _UUID_RE.fullmatch(text):
        return None
    return str(uuidlib.UUID(text))


def _where_it_runs(matches: list[Guest]) -> Guest | None:
    """The one active copy among ``matches`` when they are all one VM (one UUID);
    None when they are not, or not exactly one runs, or a state cannot be read."""
    try:
        if len({g.uuid() for g in matches}) != 1:
            return None
        active = [g for g in matches if g.status().state.is_active]
    except errors.VirtlifeError:  # cannot tell where it runs: the caller asks
        return None
    return active[0] if len(active) == 1 else None


def find_ref(host: Host, vm: str) -> Guest | None:
    """The VM of ``host`` whose UUID is ``vm`` (when it is one), else the one named
    ``vm``; None when the host has neither."""
    uuid = as_uuid(vm)
    found = host.find_uuid(uuid) if uuid is not None else None
    return found if found is not None else host.find(vm)


def rows_of(host: Host, journal: Journal | None, *, observe: bool,
            include_inactive: bool = True) -> list[VMRow]:
    """Every VM of ``host`` as a row, from one bulk read; with ``observe``, states as the
    operator sees them (``observed_state``), else libvirt's own."""
    rows = []
    for d in list_domains(host):  # one bulk read, not five calls per VM
        if not include_inactive and not d.state.state.is_active:
            continue
        state = observed_state(d.guest, journal, d.state) if observe else d.state
        rows.append(VMRow(host.name, d.guest.name, state, d.vcpus, d.max_memory_mib,
                          d.persistent, d.guest.uuid()))
    return rows


class Fleet:
    """All hosts of one inventory (or one ``--connect`` URI), each a cached ``Host``."""

    def __init__(self, hosts: HostSource, *,
                 connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
                 retry_after_s: float = DEFAULT_RETRY_AFTER_S,
                 list_deadline_s: float = DEFAULT_LIST_DEADLINE_S,
                 journal: Journal | None = None) -> None:
        self._source: Callable[[], Iterable[HostRef]] | None = None
        self._fixed: dict[str, HostRef] = {}
        if callable(hosts):
            self._source = hosts
        else:
            self._fixed = {h.name: h for h in hosts}
        self.journal = journal
        self.connect_timeout_s = connect_timeout_s
        self.retry_after_s = retry_after_s
        self.list_deadline_s = list_deadline_s
        self._hosts: dict[str, Host] = {}
        self._callers: dict[str, tuple[Host, HostCaller]] = {}
        self._lock = threading.Lock()

    def close(self, *, wait: bool = True) -> None:
        """Close every host's connection; nothing stays cached (the fleet may be reused).

        The connections close all at once, each as its host caller's last turn (after
        the call it may still run; a host never called through ``each_host`` closes on
        the connection pool); with ``wait`` (the default) this returns once they are closed (5 s at
        most). A process about to end passes ``wait=False``: the closes are started,
        not awaited (libvirt's close is a round trip per host; the daemons see the
        sockets close at exit anyway).
        """
        with self._lock:
            hosts, self._hosts = list(self._hosts.values()), {}
            callers, self._callers = list(self._callers.values()), {}
        # a host stuck in a call it never answered (a cut link) closes after that call,
        # at libvirt's keepalive: not awaited, or every command would wait for it
        stuck = {id(host) for host, caller in callers if caller.stuck}
        for host, caller in callers:
            caller.stop(then=host.begin_close() if host in hosts else None)
        called = {id(host) for host, _caller in callers}
        for host in hosts:  # all at once, then wait for them under one deadline
            if id(host) not in called:
                host.close(timeout_s=0)
        if not wait:
            return
        deadline = time.monotonic() + 5.0
        for host in hosts:
            if id(host) not in stuck:
                host.wait_closed(deadline - time.monotonic())

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- hosts ---------------------------------------------------------------------

    @property
    def refs(self) -> dict[str, HostRef]:
        """The hosts by name, as the inventory has them now.

        Re-read on every use when the fleet was given a callable; a host that left
        the inventory (or whose URI changed) has its connection closed here.
        """
        if self._source is None:
            return dict(self._fixed)
        current = {h.name: h for h in self._source()}
        with self._lock:
            gone = [h for name, h in self._hosts.items()
                    if name not in current or current[name].uri != h.uri
                    or current[name].refused != h.refused]
            for h in gone:
                del self._hosts[h.name]
            stopped = [c for name, (h, c) in self._callers.items() if h in gone]
            self._callers = {n: e for n, e in self._callers.items() if e[0] not in gone}
        for caller in stopped:
            caller.stop()
        for h in gone:
            logger.info("host %s (%s) left the inventory; closing its connection",
                        h.name, h.uri)
            h.close()
        return current

    def ref(self, name: str) -> HostRef:
        return self.ref_in(self.refs, name)

    @staticmethod
    def ref_in(refs: dict[str, HostRef], name: str) -> HostRef:
        """The host ``name`` of ``refs`` (one reading of ``refs``), or ``HostNotFound``."""
        try:
            return refs[name]
        except KeyError:
            known = ", ".join(sorted(refs)) or "none"
            raise errors.HostNotFound(
                f"no host named {name} (known hosts: {known}); `virtlife host list` shows them"
            ) from None

    def _host(self, ref: HostRef) -> Host:
        """The cached Host for ``ref`` (created, not connected, when there is none)."""
        with self._lock:
            old = self._hosts.get(ref.name)
            if (old is not None and not old.closed and old.uri == ref.uri
                    and old.refused == ref.refused):
                return old
            host = Host(ref.name, ref.uri, connect_timeout_s=self.connect_timeout_s,
                        retry_after_s=self.retry_after_s, refused=ref.refused)
            self._hosts[ref.name] = host
        if old is not None and not old.closed:  # its URI (or its refusal) changed
            old.close()
        return host

    def _connected(self, ref: HostRef) -> Host:
        host = self._host(ref)
        host.connect()
        return host

    def host(self, name: str, *, connect: bool = True) -> Host:
        """The host ``name``, connected (within the connect deadline) or reconnected.

        ``HostNotFound`` if the inventory has no such host; ``HostUnreachable`` if it
        cannot be reached now (or could not be a moment ago). With ``connect=False``
        the Host is returned as it is (it connects on first use).
        """
        ref = self.ref(name)
        return self._connected(ref) if connect else self._host(ref)

    def _caller(self, name: str, host: Host) -> HostCaller:
        """The one caller of ``host`` (a replaced Host gets a new one)."""
        with self._lock:
            entry = self._callers.get(name)
            if entry is not None and entry[0] is host:
                return entry[1]
            caller = HostCaller(name)
            self._callers[name] = (host, caller)
        if entry is not None:
            entry[1].stop()
        return caller

    def each_host(
        self, fn: Callable[[Host], T], names: Iterable[str] | None = None, *,
        deadline_s: float | None = None, refs: dict[str, HostRef] | None = None,
    ) -> tuple[dict[str, T], list[HostProblem]]:
        """Run ``fn`` on every host at once; collect results and per-host problems.

        Each host's calls run in turn through its one ``HostCaller`` (made on first use
        and kept), so a host that never answers holds one worker, however often it is
        asked. The caller waits at most ``deadline_s`` (default: the connect timeout
        and a grace) for them all; a host that has not answered by then is reported,
        and one still busy with a call given up earlier is reported at once. An
        exception that is not a ``VirtlifeError`` is a bug: it is re-raised here.
        ``refs``: the inventory as the caller read it just before (default: read now).
        """
        refs = self.refs if refs is None else refs
        wanted = [self.ref_in(refs, n) for n in (names if names is not None else sorted(refs))]
        limit = deadline_s if deadline_s is not None else self.connect_timeout_s + JOIN_GRACE_S
        shown = deadline_s if deadline_s is not None else self.connect_timeout_s
        end = time.monotonic() + limit
        calls: dict[str, HostCall[T]] = {}
        hosts: dict[str, Host] = {}
        problems: dict[str, HostProblem] = {}
        callers: dict[str, HostCaller] = {}
        for ref in wanted:
            host = hosts[ref.name] = self._host(ref)
            callers[ref.name] = self._caller(ref.name, host)
        for ref in wanted:
            host = hosts[ref.name]
            pending = callers[ref.name].submit(partial(_connected_call, host, fn))
            if isinstance(pending, Busy):
                problems[ref.name] = HostProblem(ref.name, ref.uri, pending.reason)
            else:
                calls[ref.name] = pending
        for name, call in calls.items():
            _await_call(call, hosts[name], end)
        results: dict[str, T] = {}
        bug: BaseException | None = None
        for ref in wanted:
            if ref.name not in calls:
                continue
            call = calls[ref.name]
            if call.abandon():
                overdue = hosts[ref.name].give_up_overdue_connect()
                problems[ref.name] = HostProblem(
                    ref.name, ref.uri, overdue or
                    f"host {ref.name} ({ref.uri}) did not answer within {shown:g} s")
            elif isinstance(call.error, errors.VirtlifeError):
                problems[ref.name] = HostProblem(ref.name, ref.uri, str(call.error))
            elif call.error is not None:
                bug = bug or call.error
            else:
                results[ref.name] = call.value  # type: ignore[assignment]
        if bug is not None:
            raise bug
        return results, [problems[r.name] for r in wanted if r.name in problems]

    # -- VMs -------------------------------------------------------------------------

    def list_vms(self, *, include_inactive: bool = True, host: str | None = None,
                 deadline_s: float | None = None) -> FleetListing:
        """Every VM of every host (or of ``host``): one bulk read per host, all hosts at
        once, on connections kept for the next call. A host that has not answered
        within ``deadline_s`` (default: the fleet's ``list_deadline_s``) is listed as
        unreachable, and the listing returns without it."""
        limit = self.list_deadline_s if deadline_s is None else deadline_s
        results, problems = self.each_host(
            lambda h: rows_of(h, self.journal, observe=True, include_inactive=include_inactive),
            [host] if host else None, deadline_s=limit)
        rows = [row for name in sorted(results) for row in results[name]]
        rows.sort(key=lambda r: (r.host, r.name))
        return FleetListing(rows, problems, sorted(results))

    def resolve(self, ref: str) -> Guest:
        """The one VM called ``ref`` (``NAME``, ``UUID``, ``HOST/NAME`` or ``HOST/UUID``:
        a UUID is looked up as one first, then as a name, as virsh does).

        Without a host, a VM found on several hosts under one UUID is one VM, and ``ref``
        names it where it runs (a migration with ``--keep-source`` left a shut-off copy
        behind); when it runs nowhere, or its state cannot be read, or the matches are
        different VMs, ``AmbiguousName`` asks for the host."""
        host_name, name = split_ref(ref)
        refs = self.refs
        if host_name is None and len(refs) == 1:
            host_name = next(iter(refs.values())).name
        if host_name is not None:
            host = self.host(host_name)
            uuid = as_uuid(name)
            by_uuid = host.find_uuid(uuid) if uuid is not None else None
            return by_uuid if by_uuid is not None else host.lookup(name)
        found, problems = self.each_host(lambda h: find_ref(h, name))
        matches = [g for g in found.values() if g is not None]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            running = _where_it_runs(matches)
            if running is not None:
                return running
            raise errors.AmbiguousName(
                name, sorted(f"{g.host.name}/{g.name}" for g in matches))
        msg = f"no VM named {name} on any host"
        if as_uuid(name) is not None:
            msg = f"no VM with the UUID or name {name} on any host"
        if problems:
            msg += " (unreachable: " + ", ".join(p.host for p in problems) + ")"
        raise errors.VMNotFound(msg)

    def state_of(self, host: str, name: str) -> StateInfo:
        guest = self.host(host).find(name)
        return guest.status() if guest is not None else StateInfo(VMState.UNDEFINED, "")
