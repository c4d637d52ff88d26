"""The fleet: every configured host, reached concurrently, and VM name resolution.

``Fleet`` opens (and caches) one ``Host`` per inventory entry, asks all hosts at
once with a deadline so that an unreachable host is reported and never hides the
others, and resolves ``NAME`` or ``HOST/NAME`` to exactly one ``Guest``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from virtlife import errors
from virtlife.hypervisor import Guest, Host
from virtlife.services.observe import observed_state
from virtlife.states import StateInfo, VMState

if TYPE_CHECKING:
    from virtlife.store.journal import Journal

T = TypeVar("T")

DEFAULT_CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class HostRef:
    """A host as the inventory names it."""

    name: str
    uri: str


@dataclass(frozen=True)
class VMRow:
    host: str
    name: str
    state: StateInfo
    vcpus: int
    memory_mib: int
    persistent: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "host": self.host, "name": self.name, "state": self.state.state.value,
            "label": self.state.state.label, "reason": self.state.reason,
            "vcpus": self.vcpus, "memory_mib": self.memory_mib,
            "persistent": self.persistent,
        }


@dataclass(frozen=True)
class HostProblem:
    host: str
    uri: str
    message: str


@dataclass(frozen=True)
class FleetListing:
    rows: list[VMRow]
    unreachable: list[HostProblem]


def split_ref(ref: str) -> tuple[str | None, str]:
    """``"web1"`` -> (None, "web1"); ``"hostA/web1"`` -> ("hostA", "web1")."""
    if "/" in ref:
        host, _, name = ref.partition("/")
        if not host or not name:
            raise errors.VMNotFound(f"{ref!r} is not a VM name: use NAME or HOST/NAME")
        return host, name
    return None, ref


class Fleet:
    """All hosts of one inventory (or one ``--connect`` URI)."""

    def __init__(self, hosts: Iterable[HostRef], *,
                 connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
                 journal: Journal | None = None) -> None:
        self.refs: dict[str, HostRef] = {h.name: h for h in hosts}
        self.journal = journal
        self.connect_timeout_s = connect_timeout_s
        self._hosts: dict[str, Host] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            hosts, self._hosts = list(self._hosts.values()), {}
        for host in hosts:
            host.close()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- hosts ---------------------------------------------------------------------

    def ref(self, name: str) -> HostRef:
        try:
            return self.refs[name]
        except KeyError:
            known = ", ".join(sorted(self.refs)) or "none"
            raise errors.HostNotFound(
                f"no host named {name} (known hosts: {known}); `virtlife host list` shows them"
            ) from None

    def host(self, name: str) -> Host:
        """The connected host ``name``, reconnecting if its connection was lost."""
        ref = self.ref(name)
        with self._lock:
            cached = self._hosts.get(name)
            if cached is not None and not cached.closed:
                return cached
        host = Host.open(ref.name, ref.uri)
        with self._lock:
            self._hosts[name] = host
        return host

    def each_host(
        self, fn: Callable[[Host], T], names: Iterable[str] | None = None
    ) -> tuple[dict[str, T], list[HostProblem]]:
        """Run ``fn`` on every host at once; collect results and per-host problems.

        Each host gets its own daemon thread; a host that has not answered within the
        connect timeout is reported unreachable while its thread is left behind.
        """
        wanted = [self.ref(n) for n in (names if names is not None else sorted(self.refs))]
        results: dict[str, T] = {}
        problems: dict[str, HostProblem] = {}
        lock = threading.Lock()

        def work(ref: HostRef) -> None:
            try:
                value = fn(self.host(ref.name))
            except errors.VirtlifeError as err:
                with lock:
                    problems[ref.name] = HostProblem(ref.name, ref.uri, str(err))
                return
            with lock:
                results[ref.name] = value

        threads = [threading.Thread(target=work, args=(r,), daemon=True) for r in wanted]
        for t in threads:
            t.start()
        deadline = time.monotonic() + self.connect_timeout_s
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        with lock:
            for ref in wanted:
                if ref.name not in results and ref.name not in problems:
                    problems[ref.name] = HostProblem(
                        ref.name, ref.uri,
                        f"host {ref.name} ({ref.uri}) did not answer within "
                        f"{self.connect_timeout_s:.0f} s",
                    )
            return dict(results), [problems[r.name] for r in wanted if r.name in problems]

    # -- VMs -------------------------------------------------------------------------

    def list_vms(self, *, include_inactive: bool = True,
                 host: str | None = None) -> FleetListing:
        def rows_of(h: Host) -> list[VMRow]:
            rows = []
            for guest in h.guests():
                try:
                    info = guest.info()
                except errors.VMNotFound:  # a transient VM that ended while we listed
                    continue
                if not include_inactive and not info.state.state.is_active:
                    continue
                state = observed_state(guest, self.journal, info.state)
                rows.append(VMRow(h.name, guest.name, state, info.vcpus,
                                  info.max_memory_mib, info.persistent))
            return rows

        results, problems = self.each_host(rows_of, [host] if host else None)
        rows = [row for name in sorted(results) for row in results[name]]
        rows.sort(key=lambda r: (r.host, r.name))
        return FleetListing(rows, problems)

    def resolve(self, ref: str) -> Guest:
        """The one VM called ``ref`` (``NAME`` or ``HOST/NAME``)."""
        host_name, name = split_ref(ref)
        if host_name is not None:
            return self.host(host_name).lookup(name)
        if len(self.refs) == 1:
            return self.host(next(iter(self.refs))).lookup(name)
        found, problems = self.each_host(lambda h: h.find(name))
        matches = [g for g in found.values() if g is not None]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise errors.AmbiguousName(name, sorted(f"{g.host.name}/{name}" for g in matches))
        msg = f"no VM named {name} on any host"
        if problems:
            msg += " (unreachable: " + ", ".join(p.host for p in problems) + ")"
        raise errors.VMNotFound(msg)

    def state_of(self, host: str, name: str) -> StateInfo:
        guest = self.host(host).find(name)
        return guest.status() if guest is not None else StateInfo(VMState.UNDEFINED, "")
