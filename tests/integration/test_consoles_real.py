"""Consoles on the real libvirtd + QEMU with the test guest (busybox sh on ttyS0):
``virtlife console`` exchanges lines with the guest's shell, a second console is
refused while one is attached and ``--force`` takes it over, the session survives a
``virtlife reboot`` and ends cleanly when the VM stops; ``viewer-file`` and
``vnc --json`` agree with ``virsh vncdisplay``, the VNC socket speaks RFB, and
``graphics --listen`` on a running VM changes only its definition, for the next boot.

The commands run as the real ``virtlife`` (its implicit local host); every console
process is ended and every VM removed by ``make_vm``, even when a test fails.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from support import VIRTLIFE
from virtlife.services.context import Services
from virtlife.xml.graphics import vnc

pytestmark = pytest.mark.integration

MakeVM = Callable[..., str]
URI = "qemu:///system"
WAIT_S = 60.0


def virtlife(*args: str, input: str | None = None,
             timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VIRTLIFE, *args], input=input, capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy(), check=False)


class Console:
    """``virtlife console VM ARGS`` in the background (``env``: another inventory's, such
    as the lab's), its stdin a pipe we write to and its output collected by threads."""

    def __init__(self, vm: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([*VIRTLIFE, "console", vm, *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE,
                                     env=env if env is not None else os.environ.copy())
        self.out = bytearray()
        self.err = bytearray()
        self._lock = threading.Lock()
        for pipe, buf in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._collect, args=(pipe, buf), daemon=True).start()

    def _collect(self, pipe: object, buf: bytearray) -> None:
        read = pipe.read1  # type: ignore[attr-defined]
        while chunk := read(4096):
            with self._lock:
                buf.extend(chunk)

    def text(self, err: bool = False) -> str:
        with self._lock:
            return bytes(self.err if err else self.out).decode(errors="replace")

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode())
        self.proc.stdin.flush()

    def wait_for(self, pattern: str, *, err: bool = False, timeout_s: float = WAIT_S,
                 since: int = 0, resend: str | None = None) -> None:
        """Wait until ``pattern`` shows in stdout (stderr) after offset ``since``;
        ``resend`` is written again every few seconds meanwhile (a guest still booting)."""
        deadline = time.monotonic() + timeout_s
        last = time.monotonic()
        while not re.search(pattern, self.text(err)[since:]):
            if time.monotonic() > deadline:
                pytest.fail(f"no {pattern!r} from the console within {timeout_s:.0f} s; "
                            f"stdout: {self.text()[-2000:]!r} stderr: {self.text(True)!r}")
            if self.proc.poll() is not None and not err:
                time.sleep(0.3)  # the last output may still be in the pipe
                if not re.search(pattern, self.text(err)[since:]):
                    pytest.fail(f"the console ended (exit {self.proc.returncode}) before "
                                f"{pattern!r}: {self.text()!r} {self.text(True)!r}")
            if resend is not None and time.monotonic() - last > 3:
                self.send(resend)
                last = time.monotonic()
            time.sleep(0.1)

    def end(self, timeout_s: float = 30) -> int:
        """Close stdin (the console drains, then leaves) and return its exit code."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        return self.proc.wait(timeout_s)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def consoles() -> Iterator[list[Console]]:
    """Console processes to end after the test, whatever happened."""
    started: list[Console] = []
    yield started
    for console in started:
        console.kill()


@pytest.fixture
def running_vm(services: Services, make_vm: MakeVM) -> str:
    name = make_vm()
    services.lifecycle.start(name, wait_agent=True)
    return name


def _open(consoles: list[Console], vm: str, *args: str) -> Console:
    console = Console(vm, *args)
    consoles.append(console)
    console.wait_for("connected to the serial console", err=True)
    return console


def test_console_exchanges_a_line_with_the_guest_shell(running_vm: str) -> None:
    run = virtlife("console", running_vm, input="\necho vl-$((6*7))-answer\n")
    assert run.returncode == 0, run.stderr
    assert "vl-42-answer" in run.stdout
    assert run.stderr.splitlines()[-1] == f"virtlife: left the serial console of {running_vm}"


def test_console_output_to_a_pipe_has_no_cursor_position_query(running_vm: str) -> None:
    # the guest's shell asks its terminal where the cursor is (ESC[6n); printed to a
    # pipe, nothing answers and it showed raw in the output (issue 15)
    run = subprocess.run([*VIRTLIFE, "console", running_vm],
                         input=b"\nprintf 'dsr:\\033[6n:%s\\n' $((6*7))\n",
                         capture_output=True, timeout=180, env=os.environ.copy(), check=False)
    assert run.returncode == 0, run.stderr
    assert b"dsr::42" in run.stdout  # the guest's printf, with its query removed
    assert b"\x1b[6n" not in run.stdout


def test_a_second_console_is_refused_and_force_takes_it_over(
        running_vm: str, consoles: list[Console]) -> None:
    first = _open(consoles, running_vm)
    first.send("\necho first-$((1+1))\n")
    first.wait_for("first-2")
    second = virtlife("console", running_vm, input="echo no\n")
    assert second.returncode == 6, second.stderr
    assert second.stderr == (
        f"virtlife: cannot open the serial console of {running_vm} on local: it is held by "
        "another client (another virtlife console, virsh console or a web console); use "
        "--force to take it over\n")
    forced = virtlife("console", running_vm, "--force", input="\necho forced-$((2+3))\n")
    assert forced.returncode == 0, forced.stderr
    assert "forced-5" in forced.stdout
    assert first.proc.wait(30) == 1  # taken over: not a clean end
    assert "another client may have taken it over with --force" in first.text(err=True)


def test_the_console_survives_a_reboot_and_ends_cleanly_when_the_vm_stops(
        running_vm: str, consoles: list[Console]) -> None:
    console = _open(consoles, running_vm)
    console.send("\necho before-$((3+4))\n")
    console.wait_for("before-7")
    reboot = virtlife("reboot", running_vm)
    assert reboot.returncode == 0, reboot.stderr
    mark = len(console.text())
    # the same session sees the guest come back, and its new shell answers
    console.wait_for("after-12", since=mark, timeout_s=180, resend="\necho after-$((5+7))\n")
    assert console.proc.poll() is None
    destroy = virtlife("destroy", running_vm)
    assert destroy.returncode == 0, destroy.stderr
    assert console.proc.wait(30) == 0
    assert console.text(err=True).splitlines()[-1] == (
        f"virtlife: the serial console of {running_vm} ended: {running_vm} is shut off "
        "(destroyed)")


def test_viewer_file_and_vnc_agree_with_virsh_and_the_socket_speaks_rfb(
        running_vm: str, services: Services) -> None:
    display = subprocess.run(["virsh", "-c", URI, "vncdisplay", running_vm],
                             capture_output=True, text=True, timeout=30, check=True)
    host, _, number = display.stdout.strip().rpartition(":")
    port = 5900 + int(number)
    run = virtlife("viewer-file", running_vm)
    assert run.returncode == 0, run.stderr
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(run.stdout)
    viewer = parser["virt-viewer"]
    assert (viewer["type"], viewer["host"], int(viewer["port"]), viewer["title"],
            viewer["delete-this-file"]) == ("vnc", "127.0.0.1", port, running_vm, "1")
    assert "password" not in viewer
    info = json.loads(virtlife("vnc", running_vm, "--json").stdout)
    assert (info["listen"], info["port"], info["display"], info["password"]) == (
        host, port, int(number), False)
    with services.consoles.vnc_socket(running_vm) as sock:
        sock.settimeout(10)
        assert sock.recv(12) == b"RFB 003.008\n"


def test_graphics_listen_on_a_running_vm_changes_the_definition_for_the_next_boot(
        running_vm: str, services: Services) -> None:
    run = virtlife("graphics", running_vm, "--listen", "0.0.0.0")
    assert run.returncode == 0, run.stderr
    assert "VNC listens on 0.0.0.0; it applies at the next boot" in run.stdout
    guest = services.fleet.resolve(running_vm)
    defined, live = vnc(guest.xml(inactive=True)), vnc(guest.xml())
    assert defined is not None and defined.listen == "0.0.0.0"
    assert live is not None and live.listen == "127.0.0.1"
    history = json.loads(virtlife("history", running_vm, "--json").stdout)
    assert (history[0]["operation"], history[0]["outcome"]) == ("graphics", "ok")
