"""One object holding what a front end needs: store, fleet and lifecycle service.

The CLI builds one per command; a REST API would build one per process. With
``connect_uri`` the fleet is that single libvirt URI (like ``virsh -c``) and the
inventory is not consulted; otherwise it is the inventory's hosts, or the implicit
local host while the inventory is empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from virtlife.services.fleet import Fleet, HostRef
from virtlife.services.lifecycle import Lifecycle
from virtlife.services.progress import Progress
from virtlife.store import Store, open_store


@dataclass
class Services:
    store: Store
    fleet: Fleet
    lifecycle: Lifecycle
    connect_uri: str | None

    def default_host(self) -> str:
        """The host to act on when none is named: the only one, else an error."""
        names = sorted(self.fleet.refs)
        if len(names) == 1:
            return names[0]
        from virtlife.errors import HostNotFound

        raise HostNotFound(
            "several hosts are configured (" + ", ".join(names) + "); name one with --host")

    def close(self) -> None:
        self.fleet.close()
        self.store.close()

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def host_refs(store: Store, connect_uri: str | None) -> list[HostRef]:
    """The fleet's hosts; a ``--connect`` URI keeps the inventory's name for it, if any."""
    known = [HostRef(r.name, r.uri) for r in store.hosts.effective()]
    if connect_uri:
        named = [h for h in known if h.uri == connect_uri]
        return named[:1] or [HostRef(connect_uri, connect_uri)]
    return known


def open_services(connect_uri: str | None = None, *, store_path: Path | None = None,
                  progress: Progress | None = None,
                  connect_timeout_s: float | None = None) -> Services:
    store = open_store(store_path)
    kwargs = {} if connect_timeout_s is None else {"connect_timeout_s": connect_timeout_s}
    fleet = Fleet(host_refs(store, connect_uri), journal=store.journal, **kwargs)
    return Services(store, fleet, Lifecycle(fleet, store.journal, progress), connect_uri)
