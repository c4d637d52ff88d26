"""Virt-type policy for new VMs (kvm only where KVM really works), and creating one on
a host that only a ``-c URI`` names."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import NODE_URI
from virtlife import errors
from virtlife.services import provision
from virtlife.services.context import open_services
from virtlife.services.provision import choose_virt_type
from virtlife.states import VMState
from virtlife.xml.domain import DomainSpec


def test_kvm_when_offered_and_working() -> None:
    assert choose_virt_type({"kvm", "qemu"}, uri="qemu:///system", kvm_works=True) == "kvm"


def test_qemu_when_kvm_is_offered_but_broken() -> None:
    assert choose_virt_type({"kvm", "qemu"}, uri="qemu:///system", kvm_works=False) == "qemu"


def test_kvm_is_not_assumed_where_it_was_not_proven() -> None:
    # a host offering kvm in its capabilities, never probed: its URI proves nothing
    assert choose_virt_type({"kvm", "qemu"}, uri="qemu+tcp://h/system", kvm_works=None) == "qemu"
    assert choose_virt_type({"kvm", "qemu"}, uri="qemu:///system", kvm_works=None) == "qemu"


def test_kvm_proven_on_a_remote_host_is_used() -> None:
    assert choose_virt_type({"kvm", "qemu"}, uri="qemu+tcp://h/system", kvm_works=True) == "kvm"


def test_tcg_only_host_gets_qemu() -> None:
    assert choose_virt_type({"qemu"}, uri="qemu+tcp://h/system", kvm_works=None) == "qemu"


def test_test_driver_gets_test() -> None:
    assert choose_virt_type({"test"}, uri="test:///default", kvm_works=None) == "test"


def test_requested_type_must_be_offered() -> None:
    with pytest.raises(errors.InvalidDefinition, match="not offered"):
        choose_virt_type({"qemu"}, uri="qemu:///system", kvm_works=False, requested="kvm")
    assert choose_virt_type({"qemu"}, uri="qemu:///system", kvm_works=False,
                            requested="qemu") == "qemu"


def test_no_usable_type_is_unsupported() -> None:
    with pytest.raises(errors.Unsupported):
        choose_virt_type({"xen"}, uri="xen:///system", kvm_works=None)


def test_create_and_start_on_a_host_named_by_its_connect_uri(tmp_path: Path) -> None:
    # `virtlife -c URI create --start` where the inventory has no name for URI: the
    # host is named by its URI, slashes and all ("qemu+tcp://h/system")
    with open_services(NODE_URI, store_path=tmp_path / "s.db") as s:
        host = s.default_host()
        assert host == NODE_URI and "/" in host
        result = provision.create(s.lifecycle, DomainSpec(name="web-new", memory_mib=64),
                                  host=host, start=True)
        assert result.state.state is VMState.RUNNING
        assert s.fleet.host(host).lookup("web-new").status().state is VMState.RUNNING
        named, state = s.lifecycle.state(f"{host}/web-new")  # HOST/NAME with such a host
        assert (named, state.state) == (host, VMState.RUNNING)


def test_create_start_failure_says_the_vm_stays_defined_and_how_to_retry_or_remove(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # issue 15: the define succeeded, the start after it failed; the error said only
    # the start's words, and the VM stayed defined without a word about it
    from virtlife.hypervisor.guest import Guest

    def refuse(self: Guest, **_kw: object) -> None:
        raise errors.OperationFailed(
            f"cannot start {self.name} on host {self.host.name}: internal error: "
            "process exited while connecting to monitor")

    monkeypatch.setattr(Guest, "start", refuse)
    with open_services(NODE_URI, store_path=tmp_path / "s.db") as s:
        host = s.default_host()
        with pytest.raises(errors.OperationFailed) as caught:
            provision.create(s.lifecycle, DomainSpec(name="web-new", memory_mib=64),
                             host=host, start=True)
        message = str(caught.value)
        assert message.startswith("cannot start web-new on host")  # the start's words first
        assert "web-new was defined on host" in message
        assert "stays defined, not running" in message
        assert "`virtlife start web-new`" in message
        assert "`virtlife undefine web-new`" in message
        assert s.fleet.host(host).lookup("web-new").status().state is VMState.SHUTOFF


def test_create_start_failure_names_the_host_when_the_fleet_has_several(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from support import NODE2_URI
    from virtlife.hypervisor.guest import Guest
    from virtlife.store import open_store

    def refuse(self: Guest, **_kw: object) -> None:
        raise errors.OperationFailed(f"cannot start {self.name}: no")

    monkeypatch.setattr(Guest, "start", refuse)
    store = open_store(tmp_path / "s.db")
    store.hosts.add("h1", NODE_URI)
    store.hosts.add("h2", NODE2_URI)
    store.close()
    with open_services(None, store_path=tmp_path / "s.db") as s:
        with pytest.raises(errors.OperationFailed, match="`virtlife undefine h2/web-new`"):
            provision.create(s.lifecycle, DomainSpec(name="web-new", memory_mib=64),
                             host="h2", start=True)
