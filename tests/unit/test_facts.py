"""Host facts: recorded per URI, re-asked when stale or when the host_uuid changed; the
store's table on its own; the probe's XML and capability parsing on the test driver."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from support import NODE_URI
from virtlife.hypervisor import Host
from virtlife.hypervisor.probe import identity
from virtlife.services import facts as facts_mod
from virtlife.store import Store, open_store
from virtlife.store.facts import StoredFacts, now


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(tmp_path / "s.db")


class Counter:
    """Stands in for the two host calls; counts them. Does not talk to any host."""

    def __init__(self, host_uuid: str = "u1", types: set[str] | None = None,
                 kvm: bool = False) -> None:
        self.host_uuid = host_uuid
        self.types = types if types is not None else {"kvm", "qemu"}
        self.kvm = kvm
        self.probes = 0

    def identity(self, _host: object) -> tuple[str, set[str]]:
        return self.host_uuid, self.types

    def kvm_usable(self, _host: object) -> tuple[bool, str]:
        self.probes += 1
        return self.kvm, "" if self.kvm else "failed to set MSR"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Counter:
    counter = Counter()
    monkeypatch.setattr(facts_mod, "identity", counter.identity)
    monkeypatch.setattr(facts_mod, "kvm_usable", counter.kvm_usable)
    monkeypatch.setattr(facts_mod, "_cache", {})
    return counter


HOST = SimpleNamespace(name="h1", uri="qemu+tcp://h1/system")


def test_the_counter_counts() -> None:
    c = Counter()
    assert c.kvm_usable(None) == (False, "failed to set MSR") and c.probes == 1


def test_facts_are_probed_once_and_then_read_from_the_store(store: Store,
                                                           fake: Counter) -> None:
    first = facts_mod.host_facts(HOST, store.facts)  # type: ignore[arg-type]
    again = facts_mod.host_facts(HOST, store.facts)  # type: ignore[arg-type]
    assert fake.probes == 1
    assert (first.kvm, first.kvm_note, first.virt_types) == (
        False, "failed to set MSR", ("kvm", "qemu"))
    assert again == first == store.facts.get(HOST.uri)


def test_a_changed_host_uuid_means_another_machine_and_a_new_probe(store: Store,
                                                                  fake: Counter) -> None:
    facts_mod.host_facts(HOST, store.facts)  # type: ignore[arg-type]
    fake.host_uuid, fake.kvm = "u2", True
    assert facts_mod.host_facts(HOST, store.facts).kvm is True  # type: ignore[arg-type]
    assert fake.probes == 2


def test_stale_facts_and_refresh_probe_again(store: Store, fake: Counter) -> None:
    old = StoredFacts(HOST.uri, "u1", ("kvm",), True, "", now() - timedelta(days=30))
    store.facts.put(old)
    assert facts_mod.host_facts(HOST, store.facts).kvm is False  # type: ignore[arg-type]
    facts_mod.host_facts(HOST, store.facts, refresh=True)  # type: ignore[arg-type]
    assert fake.probes == 2


def test_a_host_without_kvm_is_not_probed(store: Store, fake: Counter) -> None:
    fake.types = {"qemu"}
    assert facts_mod.host_facts(HOST, store.facts).kvm is None  # type: ignore[arg-type]
    assert fake.probes == 0


def test_without_a_store_facts_are_kept_for_the_process(fake: Counter) -> None:
    facts_mod.host_facts(HOST, None)  # type: ignore[arg-type]
    facts_mod.host_facts(HOST, None)  # type: ignore[arg-type]
    assert fake.probes == 1


def test_identity_reads_the_host_uuid_and_offers_no_x86_64_type_on_the_test_driver() -> None:
    # the test driver's capabilities describe an i686 host without a uuid or guests
    with Host.open("t", NODE_URI) as host:
        assert identity(host) == ("", set())


def test_facts_survive_a_reopened_store(tmp_path: Path) -> None:
    entry = StoredFacts("qemu:///system", "u", ("kvm", "qemu"), None, "", now())
    with open_store(tmp_path / "f.db") as s:
        s.facts.put(entry)
    with open_store(tmp_path / "f.db") as s:
        assert s.facts.get("qemu:///system") == entry
        s.facts.forget("qemu:///system")
        assert s.facts.get("qemu:///system") is None


def test_the_reason_kvm_fails_is_qemus_error_line_without_its_timestamp() -> None:
    from virtlife.hypervisor.probe import _why

    message = ("internal error: qemu unexpectedly closed the monitor: 2026-11-26T02:26:31Z "
               "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\n"
               "qemu-system-x86_64: kvm.c:3183: kvm_buf_set_msrs: Assertion failed.")
    assert _why(message) == "failed to set MSR 0x10a to 0x69"
    assert _why("just one line") == "just one line"
    assert _why("") == "the KVM guest did not start"
