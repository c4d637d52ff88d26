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
