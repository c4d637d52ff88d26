"""``Guest``'s edges on the test driver: flags chosen from words, errors translated, jobs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support import NODE_URI
from virtlife import errors
from virtlife.hypervisor import Host
from virtlife.hypervisor.files import probe_path
from virtlife.states import VMState


@pytest.fixture
def host() -> Iterator[Host]:
    with Host.open("t", NODE_URI) as h:
        yield h


def test_repr_names_host_and_vm(host: Host) -> None:
    assert repr(host.lookup("vm-off")) == "Guest(t/vm-off)"


def test_undefine_lets_libvirt_decide_nvram_by_default(host: Host) -> None:
    guest = host.lookup("vm-off")
    guest.undefine()
    assert guest.status().state is VMState.UNDEFINED


@pytest.mark.parametrize(("nvram", "flag"), [(True, "0x4"), (False, "0x8")])
def test_an_nvram_choice_the_driver_lacks_is_unsupported_and_changes_nothing(
        host: Host, nvram: bool, flag: str) -> None:
    guest = host.lookup("vm-off")
    with pytest.raises(errors.Unsupported, match=f"unsupported flags \\({flag}\\)"):
        guest.undefine(nvram=nvram)
    assert guest.status().state is VMState.SHUTOFF


def test_the_test_driver_has_no_job_api_so_no_job_is_reported(host: Host) -> None:
    assert host.lookup("vm-running").job() is None


def test_domain_id_is_none_for_a_shut_off_vm_and_a_number_when_running(host: Host) -> None:
    assert host.lookup("vm-off").domain_id() is None
    assert isinstance(host.lookup("vm-running").domain_id(), int)


def test_probe_path_tells_absent_from_present_on_the_host(host: Host, tmp_path: object) -> None:
    from pathlib import Path

    base = Path(str(tmp_path))
    assert probe_path(host, str(base / "absent.sav")).exists is False
    (base / "file").write_text("not a save image")
    found = probe_path(host, str(base / "file"))
    assert found.exists and found.save_xml == ""
    assert probe_path(host, str(base)).exists  # a directory is something: never overwritten
