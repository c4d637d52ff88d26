"""The host inventory as users change it: add (and check) or remove a host.

Adding records the host first and then tries to reach it, so that a host that is
down today can still be registered; the check's outcome is returned, not raised.
"""

from __future__ import annotations

from dataclasses import dataclass

from virtlife import errors
from virtlife.hypervisor import Host, HostInfo
from virtlife.store import HostRecord, Store


@dataclass(frozen=True)
class AddedHost:
    record: HostRecord
    info: HostInfo | None  # what the host said, when it answered
    problem: str | None  # why it did not, otherwise


def add_host(store: Store, name: str, uri: str) -> AddedHost:
    record = store.hosts.add(name, uri)
    try:
        with Host.open(name, uri, events=False) as host:
            return AddedHost(record, host.info(), None)
    except errors.VirtlifeError as err:
        return AddedHost(record, None, str(err))


def remove_host(store: Store, name: str) -> HostRecord:
    """Forget a host; its VMs are not touched."""
    return store.hosts.remove(name)
