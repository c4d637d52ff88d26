"""Virt-type policy for new VMs: kvm only where KVM really works."""

from __future__ import annotations

import pytest

from virtlife import errors
from virtlife.services.provision import choose_virt_type


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
