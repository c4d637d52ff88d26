"""The host inventory as users change it: add (and check) or remove a host.

A URI that the policy refuses (``services.uripolicy``: one that would make libvirt run
a program, connect to a socket or read a file) is refused before anything is written,
unless the operator's own command says ``--allow-any-uri`` (the API never can). Adding
records the host first and then tries to reach it, within the connect deadline (a host
that accepts TCP and never answers must not hang the command), so that a host that is
down today can still be registered; the check's outcome is returned, not raised. A
host that answers has its facts (host_uuid, offered virt types, whether a KVM guest
starts there) recorded at once (``services.facts``).
"""

from __future__ import annotations

from dataclasses import dataclass

from virtlife import config, errors
from virtlife.config import LOCAL_HOST_NAME, LOCAL_URI
from virtlife.hypervisor import Host, HostInfo
from virtlife.hypervisor.host import DEFAULT_CONNECT_TIMEOUT_S
from virtlife.services.facts import host_facts
from virtlife.services.uripolicy import add_refusal
from virtlife.store import HostRecord, Store
from virtlife.store.facts import StoredFacts
from virtlife.store.inventory import validate_host_name, validate_uri


@dataclass(frozen=True)
class AddedHost:
    record: HostRecord
    info: HostInfo | None  # what the host said, when it answered
    problem: str | None  # why it did not, otherwise
    facts: StoredFacts | None = None  # what it offers, and whether KVM works there
    # set when this first host ended the implicit local host: what to tell the user
    dropped_local: str | None = None


def dropped_local_host() -> str:
    """What to say when the first host added ends the implicit local host."""
    return (f"the implicit local host ({LOCAL_HOST_NAME} at {LOCAL_URI}) is no longer in "
            "effect now that the inventory holds hosts, so its VMs no longer show in "
            f"`virtlife list`; `virtlife host add {LOCAL_HOST_NAME} {LOCAL_URI}` keeps it")


def add_host(store: Store, name: str, uri: str, *, any_uri: bool = False,
             connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> AddedHost:
    """Record the host, then check it. Adding the first host to an empty inventory ends
    the implicit local host: ``dropped_local`` says so and how to keep it.

    ``InvalidInput`` for a URI the policy refuses, unless ``any_uri`` (the operator's
    ``--allow-any-uri``, which the store keeps so that the URI is opened later too)."""
    validate_host_name(name)
    validate_uri(name, uri)
    refused = None if any_uri else add_refusal(name, uri,
                                                allow_test=config.allow_test_uris())
    if refused is not None:
        raise errors.InvalidInput(refused)
    first = not store.hosts.list()
    record = store.hosts.add(name, uri, any_uri=any_uri)
    dropped = dropped_local_host() if first and uri != LOCAL_URI else None
    try:
        with Host.open(name, uri, events=False, connect_timeout_s=connect_timeout_s) as host:
            info = host.info()
            facts = None if uri.startswith("test:") else host_facts(host, store.facts,
                                                                    refresh=True)
            return AddedHost(record, info, None, facts, dropped)
    except errors.VirtlifeError as err:
        return AddedHost(record, None, str(err), dropped_local=dropped)


def remove_host(store: Store, name: str) -> HostRecord:
    """Forget a host; its VMs are not touched."""
    return store.hosts.remove(name)
