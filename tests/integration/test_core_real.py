"""The core on the real libvirtd + QEMU: operations racing on one VM from two processes,
the journal's running rows and UUIDs, the active-job guard, and the KVM probe."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from virtlife import config, errors
from virtlife.hypervisor import Host
from virtlife.hypervisor.probe import PROBE_PREFIX, identity, kvm_usable
from virtlife.services.context import Services
from virtlife.states import VMState
from virtlife.store import open_store

pytestmark = pytest.mark.integration

MakeVM = Callable[..., str]
URI = "qemu:///system"
_SCRIPT = Path(sys.executable).with_name("virtlife")
VIRTLIFE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "virtlife.cli.main"]


def test_two_suspends_racing_from_two_processes_never_both_succeed(
        services: Services, make_vm: MakeVM, tmp_path: Path) -> None:
    name = make_vm()
    services.lifecycle.start(name, wait_agent=True)
    env = {**os.environ, "VIRTLIFE_HOME": str(tmp_path / "home")}
    procs = [subprocess.Popen([*VIRTLIFE, "-c", URI, "suspend", name], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes in ([0, 3], [0, 6]), outs  # one did it; the other was refused
    loser = outs[[p.returncode for p in procs].index(codes[1])][1]
    assert "it is paused" in loser or "is running on it" in loser
    with open_store(tmp_path / "home" / "virtlife.db") as store:
        outcomes = sorted(e.outcome for e in store.journal.list(vm=name))
    assert outcomes == ["ok", "refused"]
    assert str(services.lifecycle.state(name)[1]) == "paused (user)"


def test_history_follows_the_vm_by_uuid_and_a_reused_name_starts_afresh(
        services: Services, make_vm: MakeVM) -> None:
    name = make_vm()
    first = services.fleet.resolve(name).uuid()
    services.lifecycle.start(name)
    services.lifecycle.destroy(name)
    services.lifecycle.undefine(name)
    (config.images_dir() / f"{name}.qcow2").unlink()  # its disk: a new VM gets a new one
    assert make_vm() == name  # a new VM under the old name
    second = services.fleet.resolve(name).uuid()
    assert second != first
    journal = services.store.journal  # type: ignore[union-attr]
    assert [e.operation for e in journal.list(uuid=first)] == [
        "undefine", "destroy", "start", "define"]
    assert [e.operation for e in journal.list(uuid=second)] == ["define"]


def test_a_libvirt_save_job_refuses_a_conflicting_operation(
        services: Services, make_vm: MakeVM) -> None:
    # a guest that has written 400 MiB of its RAM takes a while to save, and the save is
    # started behind virtlife's back (like `virsh save`): only libvirt knows of the job
    name = make_vm(memory_mib=512, dirty_mib=400)
    services.lifecycle.start(name, wait_agent=True)
    guest = services.fleet.resolve(name)
    path = config.images_dir() / f"{name}-job.sav"
    path.unlink(missing_ok=True)
    other = Host.open("other", URI, events=False)
    seen: list[str | None] = []
    refusals: list[str] = []
    try:
        dom = other.conn.lookupByName(name)
        saver = threading.Thread(target=lambda: _quiet(lambda: dom.save(str(path))))
        saver.start()
        while saver.is_alive() and not refusals:
            seen.append(guest.job())
            if seen[-1] is not None:
                try:
                    services.lifecycle.suspend(name)
                except errors.OperationBusy as err:
                    refusals.append(str(err))
                except errors.InvalidTransition:
                    pass  # the save ended between our two looks: look again
            threading.Event().wait(0.005)
        saver.join(300)
    finally:
        other.close()
        path.unlink(missing_ok=True)
    assert "save" in seen
    assert refusals and "a libvirt save job is running on it" in refusals[0]
    assert str(services.lifecycle.state(name)[1]) == "saved (saved to file)"
    refused = services.store.journal.list(vm=name, limit=1)  # type: ignore[union-attr]
    assert (refused[0].operation, refused[0].outcome) == ("suspend", "refused")


def _quiet(fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception:  # the test asserts on what it saw; the save may end either way
        pass


def _qemu_runs_kvm() -> bool:
    """Independent evidence: QEMU itself, stopped (-S), asked over QMP to quit."""
    if not os.path.exists("/dev/kvm"):
        return False
    qmp = '{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n'
    done = subprocess.run(
        ["qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-machine", "pc",
         "-nodefaults", "-display", "none", "-S", "-qmp", "stdio"],
        input=qmp, capture_output=True, text=True, timeout=30, check=False)
    return done.returncode == 0


def test_kvm_probe_through_libvirt_agrees_with_qemu_itself(real_stack: object) -> None:
    with Host.open("local", URI, events=False) as host:
        host_uuid, types = identity(host)
        works, why = kvm_usable(host)
        leftovers = [g.name for g in host.guests() if g.name.startswith(PROBE_PREFIX)]
    assert len(host_uuid) == 36 and "qemu" in types
    assert works is _qemu_runs_kvm() and ("kvm" in types or not works)
    assert works or why  # a refusal says why
    assert leftovers == []


def test_services_open_without_a_usable_store_when_a_uri_is_given(
        real_stack: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv("VIRTLIFE_HOME", str(blocker / "home"))
    from virtlife.services.context import open_services

    with open_services(URI) as s:
        assert s.store is None and "continuing without the journal" in s.warnings[0]
        assert s.fleet.list_vms().unreachable == []
    with pytest.raises(errors.StoreUnavailable):
        open_services(None)
    assert VMState.RUNNING  # the enum is importable without a store


def test_host_add_records_the_hosts_facts_and_says_whether_kvm_works(
        real_stack: object, tmp_path: Path) -> None:
    env = {**os.environ, "VIRTLIFE_HOME": str(tmp_path / "home")}
    run = subprocess.run([*VIRTLIFE, "host", "add", "me", URI], env=env, text=True,
                         capture_output=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    works = _qemu_runs_kvm()
    expected = "KVM works" if works else "KVM does not work ("
    assert "virt types: " in run.stdout and expected in run.stdout
    with open_store(tmp_path / "home" / "virtlife.db") as store:
        facts = store.facts.get(URI)
    assert facts is not None and facts.kvm is works and len(facts.host_uuid) == 36


def test_ctrl_c_ends_a_waiting_operation_and_the_journal_says_interrupted(
        services: Services, real_stack: object, tmp_path: Path) -> None:
    import signal
    import time
    from dataclasses import replace

    from virtlife.lab.guest import GuestImage
    from virtlife.lab.spec import lab_guest_spec
    from virtlife.services import provision

    assert isinstance(real_stack, GuestImage)
    name = f"vl-it-ctrlc-{os.getpid()}"
    # the agent channel is there, but a shell is the guest's init: no agent ever answers,
    # so `start --wait-agent` waits until Ctrl-C
    spec = lab_guest_spec(real_stack, name, disk=False, user_nic=False, memory_mib=128)
    spec = replace(spec, cmdline=spec.cmdline + " rdinit=/bin/sh")
    provision.create(services.lifecycle, spec, host=services.default_host())
    home = tmp_path / "home"
    env = {**os.environ, "VIRTLIFE_HOME": str(home)}
    proc = subprocess.Popen([*VIRTLIFE, "-c", URI, "start", name, "--wait-agent"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        running: list[object] = []
        while not running and time.monotonic() < deadline:
            time.sleep(0.2)
            if (home / "virtlife.db").exists():
                with open_store(home / "virtlife.db") as store:
                    running = list(store.journal.running())
        assert running, "the start never showed as running"
        time.sleep(1.0)  # well inside the wait for the agent
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=20)
        assert proc.returncode == 130, err
        assert "virtlife: interrupted" in err
        with open_store(home / "virtlife.db") as store:
            [entry] = store.journal.list(vm=name)
            assert (entry.operation, entry.outcome) == ("start", "interrupted")
            assert store.journal.running() == []
        # the VM is not held by the interrupted operation
        assert services.lifecycle.destroy(name).state.state is VMState.SHUTOFF
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        with Host.open("cleanup", URI, events=False) as host:
            guest = host.find(name)
            if guest is not None:
                if guest.status().state.is_active:
                    guest.destroy()
                guest.undefine()


def test_waiting_for_the_agent_of_a_vm_without_its_channel_fails_at_once(
        services: Services, make_vm: MakeVM, real_stack: object) -> None:
    from dataclasses import replace

    from virtlife.lab.guest import GuestImage
    from virtlife.lab.spec import lab_guest_spec
    from virtlife.services import provision

    assert isinstance(real_stack, GuestImage)
    name = make_vm()  # for its clean-up; redefined below without the agent channel
    services.lifecycle.undefine(name)
    (config.images_dir() / f"{name}.qcow2").unlink()
    spec = replace(lab_guest_spec(real_stack, name, disk=False, user_nic=False,
                                  memory_mib=128), agent=False)
    provision.create(services.lifecycle, spec, host=services.default_host())
    with pytest.raises(errors.AgentNotConfigured,
                       match=f"add it with `virtlife agent enable {name}`"):
        services.lifecycle.start(name, wait_agent=True, timeout_s=60)
    assert services.lifecycle.state(name)[1].state is VMState.RUNNING
    [entry] = services.store.journal.list(vm=name, limit=1)  # type: ignore[union-attr]
    assert (entry.operation, entry.outcome) == ("start", "error")
