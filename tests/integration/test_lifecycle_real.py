"""Every state the product names, reached on the real libvirtd + QEMU with the test guest."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from virtlife import config, errors
from virtlife.hypervisor.agent import Agent
from virtlife.services.context import Services
from virtlife.services.wait import Watch
from virtlife.states import VMState

pytestmark = pytest.mark.integration

MakeVM = Callable[..., str]


def _up(services: Services, name: str) -> None:
    result = services.lifecycle.start(name, wait_agent=True)
    assert str(result.state) == "running (booted)"
    assert "guest agent answered" in result.note


def test_start_boots_to_a_responding_agent(services: Services, make_vm: MakeVM) -> None:
    name = make_vm()
    assert str(services.lifecycle.state(name)[1]) == "shut off (unknown)"
    _up(services, name)
    info = services.lifecycle.info(name)
    assert info.state.state is VMState.RUNNING and info.id is not None
    listing = services.fleet.list_vms(include_inactive=True)
    assert listing.unreachable == []
    assert any(r.name == name and r.state.state is VMState.RUNNING for r in listing.rows)


def test_suspend_and_resume(services: Services, make_vm: MakeVM) -> None:
    name = make_vm()
    _up(services, name)
    assert str(services.lifecycle.suspend(name).state) == "paused (user)"
    with pytest.raises(errors.InvalidTransition, match="it is paused, not running or idle"):
        services.lifecycle.suspend(name)
    assert str(services.lifecycle.resume(name).state) == "running (unpaused)"
    with pytest.raises(errors.InvalidTransition,
                       match=f"cannot resume {name}: it is running, not paused"):
        services.lifecycle.resume(name)


def test_save_to_file_and_restore(services: Services, make_vm: MakeVM) -> None:
    name = make_vm()
    _up(services, name)
    path = config.images_dir() / f"{name}.sav"
    path.unlink(missing_ok=True)
    try:
        assert str(services.lifecycle.save(name, path).state) == "saved (saved to file)"
        assert path.stat().st_size > 1_000_000
        with pytest.raises(errors.InvalidTransition, match="it is saved"):
            services.lifecycle.resume(name)
        result = services.lifecycle.restore(path, host=services.default_host(),
                                            wait_agent=True)
        assert result.vm == name
        assert str(result.state) == "running (restored)"
        assert path.exists()  # restore keeps the file
    finally:
        path.unlink(missing_ok=True)


def test_managed_save_then_start_restores(services: Services, make_vm: MakeVM) -> None:
    name = make_vm()
    _up(services, name)
    assert str(services.lifecycle.managedsave(name).state) == "saved (managed save)"
    row = next(r for r in services.fleet.list_vms().rows if r.name == name)
    assert row.state.state is VMState.SAVED
    with pytest.raises(errors.InvalidTransition, match="managed-save image"):
        services.lifecycle.undefine(name)
    result = services.lifecycle.start(name, wait_agent=True)
    assert str(result.state) == "running (restored)"


def test_managed_save_remove_makes_next_start_boot(services: Services,
                                                   make_vm: MakeVM) -> None:
    name = make_vm()
    _up(services, name)
    services.lifecycle.managedsave(name)
    assert str(services.lifecycle.managedsave_remove(name).state).startswith("shut off")
    assert str(services.lifecycle.start(name).state) == "running (booted)"


@pytest.mark.parametrize("mode", ["acpi", "agent"])
def test_graceful_shutdown_reaches_shut_off(services: Services, make_vm: MakeVM,
                                            mode: str) -> None:
    name = make_vm()
    _up(services, name)
    result = services.lifecycle.shutdown(name, mode=mode, timeout_s=60)
    assert str(result.state) == "shut off (shutdown)"


def test_destroy_pulls_the_plug_and_undefine_removes_the_vm(services: Services,
                                                            make_vm: MakeVM) -> None:
    name = make_vm()
    services.lifecycle.start(name)
    assert str(services.lifecycle.destroy(name).state) == "shut off (destroyed)"
    with pytest.raises(errors.InvalidTransition, match="it is shut off"):
        services.lifecycle.destroy(name)
    assert str(services.lifecycle.undefine(name).state) == "undefined"
    with pytest.raises(errors.VMNotFound, match=f"no VM named {name}"):
        services.lifecycle.state(name)


def test_guest_panic_is_reported_as_crashed(services: Services, make_vm: MakeVM) -> None:
    name = make_vm()
    _up(services, name)
    guest = services.fleet.resolve(name)
    with Watch(guest.host, name) as watch:
        Agent(guest).command("guest-exec", {
            "path": "/bin/sh", "arg": ["-c", "sleep 0.5; echo c > /proc/sysrq-trigger"]})
        state = watch.until_state(guest, lambda s: s.state is VMState.CRASHED, 60,
                                  describe="crashed")
    assert str(state) == "crashed (panicked)"
    with pytest.raises(errors.InvalidTransition, match="destroy it first"):
        services.lifecycle.start(name)
    with pytest.raises(errors.InvalidTransition, match="destroy it, then start it"):
        services.lifecycle.reset(name)
    assert str(services.lifecycle.destroy(name).state) == "shut off (destroyed)"


def test_qemu_killed_is_shut_off_crashed(services: Services, make_vm: MakeVM) -> None:
    name = make_vm()
    services.lifecycle.start(name)
    pid = int(Path(f"/run/libvirt/qemu/{name}.pid").read_text())
    guest = services.fleet.resolve(name)
    with Watch(guest.host, name) as watch:
        os.kill(pid, signal.SIGKILL)
        state = watch.until_state(guest, lambda s: not s.state.is_active, 30,
                                  describe="shut off")
    assert str(state) == "shut off (crashed)"


def test_pmsuspend_and_wakeup(services: Services, make_vm: MakeVM) -> None:
    name = make_vm()
    _up(services, name)
    assert str(services.lifecycle.pmsuspend(name, target="mem").state) == \
        "pmsuspended (unknown)"
    with pytest.raises(errors.InvalidTransition, match="wake it with pmwakeup instead"):
        services.lifecycle.resume(name)
    result = services.lifecycle.pmwakeup(name, wait_agent=True)
    assert result.state.state is VMState.RUNNING


def test_reboot_and_reset_come_back_with_the_agent(services: Services,
                                                   make_vm: MakeVM) -> None:
    name = make_vm()
    _up(services, name)
    result = services.lifecycle.reboot(name, mode="agent", wait_agent=True)
    assert result.state.state is VMState.RUNNING
    assert re.match(r"rebooted by the guest agent after \d+\.\d s; guest agent answered "
                    r"after \d+\.\d s$", result.note), result.note
    result = services.lifecycle.reset(name, wait_agent=True)
    assert result.state.state is VMState.RUNNING
    assert "guest agent answered" in result.note


def test_bad_input_changes_nothing(services: Services, make_vm: MakeVM) -> None:
    name = make_vm()
    host = services.default_host()
    before = services.lifecycle.dumpxml(name, inactive=True)
    with pytest.raises(errors.InvalidDefinition):
        services.lifecycle.define(before.replace("</domain>", ""), host=host)
    with pytest.raises(errors.InvalidDefinition):
        services.lifecycle.define(before.replace("<type arch", "<tpye arch", 1)
                                  .replace("</type>", "</tpye>", 1), host=host)
    assert services.lifecycle.dumpxml(name, inactive=True) == before
    with pytest.raises(errors.VMNotFound):
        services.lifecycle.start(f"{name}-ghost")
    from virtlife.services import provision
    from virtlife.xml.domain import DomainSpec

    with pytest.raises(errors.VMAlreadyExists):
        provision.create(services.lifecycle, DomainSpec(name=name), host=host)
    other_uuid = before.replace(services.fleet.resolve(name).uuid(),
                                "0badc0de-0000-0000-0000-000000000001")
    with pytest.raises(errors.VMAlreadyExists):
        services.lifecycle.define(other_uuid, host=host)
    assert services.lifecycle.dumpxml(name, inactive=True) == before


def test_journal_records_real_operations(services: Services, make_vm: MakeVM) -> None:
    name = make_vm()
    services.lifecycle.start(name)
    with pytest.raises(errors.InvalidTransition):
        services.lifecycle.start(name)
    services.lifecycle.destroy(name)
    entries = services.store.journal.list(vm=name)
    assert [(e.operation, e.outcome) for e in entries] == [
        ("destroy", "ok"), ("start", "refused"), ("start", "ok"), ("define", "ok")]
    assert entries[0].detail == "shut off (destroyed)"


def test_agent_wait_on_a_vm_that_is_not_running_says_so(services: Services,
                                                        make_vm: MakeVM) -> None:
    name = make_vm()
    services.lifecycle.start(name, paused=True)
    guest = services.fleet.resolve(name)
    with Watch(guest.host, name) as watch, pytest.raises(
            errors.AgentUnavailable, match=f"the agent of {name} cannot answer: the VM is "
                                           r"paused \(user\)"):
        watch.until_agent(guest, 30)
