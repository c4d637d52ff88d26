"""A host's facts (host_uuid, virt types, whether KVM really works), from that host.

``host_facts`` answers from the store when its row for the host's URI is fresh and the
host still has the ``host_uuid`` it had then; otherwise it asks the host: its
capabilities, and, when they offer ``kvm``, a real KVM guest start through libvirt
(``hypervisor.probe``), which is the only thing that proves KVM works. A remote host is
never assumed to have working KVM because of its URI, and the local one is asked like
any other. Without a store the answer is cached for the process.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from virtlife import errors
from virtlife.hypervisor import Host
from virtlife.hypervisor.probe import identity, kvm_usable
from virtlife.store.facts import Facts, StoredFacts, now

log = logging.getLogger(__name__)

MAX_AGE = timedelta(days=7)
_cache: dict[str, StoredFacts] = {}
_cache_lock = threading.Lock()


def _fresh(found: StoredFacts | None, host_uuid: str) -> bool:
    return (found is not None and found.host_uuid == host_uuid
            and now() - found.checked_at < MAX_AGE)


def probe_facts(host: Host, host_uuid: str, virt_types: set[str]) -> StoredFacts:
    """Ask ``host`` (a KVM start when it offers kvm: about 2 s)."""
    kvm: bool | None = None
    note = ""
    if "kvm" in virt_types:
        kvm, note = kvm_usable(host)
        log.info("KVM on %s: %s", host.name, "works" if kvm else f"does not work ({note})")
    return StoredFacts(host.uri, host_uuid, tuple(sorted(virt_types)), kvm, note, now())


def host_facts(host: Host, facts: Facts | None, *, refresh: bool = False) -> StoredFacts:
    """The facts of ``host``, recorded in ``facts`` (the store) when it is given."""
    host_uuid, virt_types = identity(host)
    found: StoredFacts | None
    if facts is not None:
        try:
            found = facts.get(host.uri)
        except errors.StoreUnavailable:
            found, facts = None, None
    else:
        with _cache_lock:
            found = _cache.get(host.uri)
    if not refresh and _fresh(found, host_uuid):
        assert found is not None
        return found
    fresh = probe_facts(host, host_uuid, virt_types)
    if facts is not None:
        try:
            facts.put(fresh)
        except errors.StoreUnavailable as err:
            log.warning("cannot record the facts of %s: %s", host.name, err)
    with _cache_lock:
        _cache[host.uri] = fresh
    return fresh
