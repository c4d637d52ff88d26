"""The built test guest boots on the real qemu:///system and its guest agent works.

Talks to libvirt directly (libvirt / libvirt_qemu), not through virtlife's hypervisor
layer, so that it tests the guest recipe alone. Every domain is transient and is
destroyed at the end of its test, and its disk is a per-test copy of disk.qcow2.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pytest

from virtlife import config
from virtlife.hypervisor.libvirt_api import libvirt, libvirt_qemu
from virtlife.lab.guest import GuestImage

pytestmark = pytest.mark.integration

URI = "qemu:///system"
AGENT_TIMEOUT_S = 60.0
SERIAL_LOG_DIR = Path("/var/log/libvirt/qemu")

Boot = Callable[..., Any]
_serial = itertools.count()


@pytest.fixture(scope="module")
def image(real_stack: GuestImage) -> GuestImage:
    """The built guest (conftest's real_stack prepared the host, or skipped/failed)."""
    return real_stack


@pytest.fixture
def conn(image: GuestImage) -> Iterator[Any]:
    """A connection per test: another test restarting libvirtd costs only that test."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    c = libvirt.open(URI)
    yield c
    with contextlib.suppress(libvirt.libvirtError):
        c.close()


def domain_xml(name: str, image: GuestImage, disk: Path, cmdline: str = "") -> str:
    log = SERIAL_LOG_DIR / f"{name}-serial.log"
    return f"""<domain type='qemu'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>192</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(str(image.kernel))}</kernel>
    <initrd>{escape(str(image.initrd))}</initrd>
    <cmdline>{escape(f"console=ttyS0 quiet {cmdline}".strip())}</cmdline>
  </os>
  <features><acpi/><apic/></features>
  <cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model></cpu>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>preserve</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{escape(str(disk))}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='user'><model type='virtio'/></interface>
    <serial type='pty'>
      <log file='{escape(str(log))}' append='off'/>
      <target port='0'/>
    </serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <panic model='isa'/>
    <memballoon model='virtio'/>
  </devices>
</domain>
"""


@pytest.fixture
def boot(image: GuestImage, conn: Any) -> Iterator[Boot]:
    """Start a transient guest (own disk copy); destroy it and delete the copy afterwards."""
    started: list[tuple[Any, Path, str]] = []
    images = config.cache_dir() / "test-images"
    images.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chmod(images, 0o755)

    def _boot(cmdline: str = "") -> Any:
        name = f"vl-guesttest-{os.getpid()}-{next(_serial)}"
        disk = images / f"{name}.qcow2"
        shutil.copyfile(image.disk, disk)
        os.chmod(disk, 0o644)
        dom = conn.createXML(domain_xml(name, image, disk, cmdline), 0)
        started.append((dom, disk, name))
        return dom

    yield _boot
    # A fresh connection: the test's own may have died with a libvirtd restart.
    try:
        cleanup = libvirt.open(URI)
    except libvirt.libvirtError:
        cleanup = None
    for _dom, disk, name in started:
        if cleanup is not None:
            # a transient domain that already stopped is simply gone
            with contextlib.suppress(libvirt.libvirtError):
                cleanup.lookupByName(name).destroy()
        disk.unlink(missing_ok=True)
        (SERIAL_LOG_DIR / f"{name}-serial.log").unlink(missing_ok=True)
    if cleanup is not None:
        cleanup.close()


def agent(dom: Any, command: str, timeout: int = 10, **arguments: Any) -> Any:
    request: dict[str, Any] = {"execute": command}
    if arguments:
        request["arguments"] = arguments
    reply = libvirt_qemu.qemuAgentCommand(dom, json.dumps(request), timeout, 0)
    return json.loads(reply)["return"]


def wait_for_agent(dom: Any, timeout: float = AGENT_TIMEOUT_S) -> float:
    """Seconds until guest-ping answers; fails the test (with the serial log) after timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            # not 1 s: a ping that times out under load leaves libvirt's agent "not
            # available for now" for the next command (seen in CI); an agent that is not
            # connected yet fails at once whatever the timeout
            agent(dom, "guest-ping", timeout=5)
            return time.monotonic() - start
        except libvirt.libvirtError:
            time.sleep(0.1)
    pytest.fail(f"the guest agent did not answer within {timeout:.0f} s\n{serial_log(dom)}")


def serial_log(dom: Any) -> str:
    try:
        return (SERIAL_LOG_DIR / f"{dom.name()}-serial.log").read_text(errors="replace")[-3000:]
    except OSError as e:
        return f"(no serial log: {e})"


def guest_exec(dom: Any, path: str, *args: str, timeout: float = 20.0) -> tuple[int, str]:
    """Run a program in the guest through the agent; (exit code, stdout)."""
    pid = agent(dom, "guest-exec", path=path, arg=list(args), **{"capture-output": True})["pid"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = agent(dom, "guest-exec-status", pid=pid)
        if status["exited"]:
            out = base64.b64decode(status.get("out-data", "")).decode()
            return int(status.get("exitcode", -1)), out
        time.sleep(0.1)
    pytest.fail(f"{path} {' '.join(args)} did not finish in the guest within {timeout:.0f} s")


def wait_for_state(dom: Any, state: int, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if dom.state()[0] == state:
                return time.monotonic() - start
        except libvirt.libvirtError:
            if state == libvirt.VIR_DOMAIN_SHUTOFF:  # a transient domain vanishes when off
                return time.monotonic() - start
            raise
        time.sleep(0.1)
    pytest.fail(f"{dom.name()} is not in state {state} after {timeout:.0f} s\n{serial_log(dom)}")


# --------------------------------------------------------------------------- tests


def test_guest_agent_answers_and_reports_os_and_data_disk(boot: Boot) -> None:
    t0 = time.monotonic()
    dom = boot()
    started = time.monotonic() - t0
    ready = wait_for_agent(dom)
    print(f"\nstart call {started:.2f} s, then guest agent answered after {ready:.2f} s")

    osinfo = agent(dom, "guest-get-osinfo")
    assert osinfo["id"] == "virtlife-guest"
    assert osinfo["name"] == "virtlife test guest"

    filesystems = {fs["mountpoint"]: fs for fs in agent(dom, "guest-get-fsinfo")}
    assert "/mnt/data" in filesystems, filesystems
    assert filesystems["/mnt/data"]["type"] == "ext4"
    assert agent(dom, "guest-get-host-name")["host-name"] == "virtlife-guest"


def test_guest_gets_slirp_address_and_accepts_a_new_password(boot: Boot) -> None:
    dom = boot()
    wait_for_agent(dom)

    deadline = time.monotonic() + 20
    addresses: list[str] = []
    while time.monotonic() < deadline and "10.0.2.15" not in addresses:
        interfaces = agent(dom, "guest-network-get-interfaces")
        addresses = [a["ip-address"] for i in interfaces for a in i.get("ip-addresses", [])]
        time.sleep(0.2)
    assert "10.0.2.15" in addresses, addresses

    password = base64.b64encode(b"s3cret:with colon").decode()
    agent(dom, "guest-set-user-password", username="root", password=password, crypted=False)
    code, shadow = guest_exec(dom, "/bin/cat", "/etc/shadow")
    assert code == 0
    assert shadow.startswith("root:$6$"), shadow


def test_dirtier_runs_when_asked_on_the_kernel_command_line(boot: Boot) -> None:
    dom = boot("virtlife.dirty=8")
    wait_for_agent(dom)

    def count() -> int:
        code, out = guest_exec(dom, "/bin/cat", "/run/dirty.count")
        return int(out.strip()) if code == 0 and out.strip() else -1

    deadline = time.monotonic() + 30
    first = count()
    while first < 1 and time.monotonic() < deadline:
        time.sleep(0.5)
        first = count()
    time.sleep(1.0)
    second = count()
    print(f"\ndirty.count {first} -> {second} in about 1 s (8 MiB per pass)")
    assert first >= 1, serial_log(dom)
    assert second > first


def test_agent_shutdown_powers_the_guest_off(boot: Boot) -> None:
    dom = boot()
    wait_for_agent(dom)
    dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT)
    took = wait_for_state(dom, libvirt.VIR_DOMAIN_SHUTOFF, 30)
    print(f"\nagent shutdown: off after {took:.2f} s")


def test_acpi_power_button_powers_the_guest_off(boot: Boot) -> None:
    dom = boot()
    wait_for_agent(dom)  # acpid runs before qemu-ga starts
    dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
    took = wait_for_state(dom, libvirt.VIR_DOMAIN_SHUTOFF, 30)
    print(f"\nACPI shutdown: off after {took:.2f} s")


def test_guest_panic_leaves_the_domain_crashed(boot: Boot) -> None:
    dom = boot()
    wait_for_agent(dom)
    try:
        agent(dom, "guest-exec", path="/bin/sh", arg=["-c", "echo c > /proc/sysrq-trigger"])
    except libvirt.libvirtError:
        pass  # the agent answers after it started the shell; the panic can come first
    wait_for_state(dom, libvirt.VIR_DOMAIN_CRASHED, 30)  # crashed all the same, or fail
