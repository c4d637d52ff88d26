"""Save images on the real stack (issue 15 A): a VM saved to a file is never booted
fresh over its saved RAM, and an image its disk has moved on from is never restored.

The guest's root is its initramfs, so a file written there lives in RAM only: it is
back after a restore (the saved RAM came back) and gone after a fresh boot. Each
command runs as an operator types it (``virtlife -c qemu:///system ...``, its exit
code and message), against this test's own store.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from support import VIRTLIFE
from virtlife import config

pytestmark = pytest.mark.integration

URI = "qemu:///system"
MARK = "/vl-ram-marker"  # on the guest's initramfs root: RAM only


def _vl(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VIRTLIFE, "-c", URI, *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def _ok(*args: str) -> str:
    run = _vl(*args)
    assert run.returncode == 0, f"virtlife {' '.join(args)}: {run.stderr}"
    return run.stdout


def _domstate(name: str) -> str:
    return subprocess.run(["virsh", "-q", "-c", URI, "domstate", name, "--reason"],
                          capture_output=True, text=True, timeout=60,
                          check=False).stdout.strip()


def _mark(name: str, text: str) -> None:
    _ok("agent", name, "exec", "--", "/bin/sh", "-c", f"echo {text} > {MARK}")


def _marked(name: str) -> str:
    """The marker file's text; "" when the guest has none (it booted fresh)."""
    run = _vl("agent", name, "exec", "--", "/bin/sh", "-c", f"cat {MARK} || true")
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


@pytest.fixture
def save_files(tmp_path: Path) -> Callable[[str], Path]:
    made: list[Path] = []

    def path(label: str) -> Path:
        made.append(config.images_dir() / f"{tmp_path.name}-{label}.sav")
        made[-1].unlink(missing_ok=True)
        return made[-1]

    yield path  # type: ignore[misc]
    for p in made:
        p.unlink(missing_ok=True)


def test_a_saved_vm_is_never_booted_over_its_ram(
        make_vm: Callable[..., str], save_files: Callable[[str], Path]) -> None:
    name = make_vm()
    _ok("start", name, "--wait-agent")
    _mark(name, "ram-1")
    first = save_files("first")
    _ok("save", name, str(first))

    refused = _vl("start", name)
    assert refused.returncode == 3, refused.stderr
    assert str(first) in refused.stderr and "virtlife restore" in refused.stderr
    assert "--discard-saved" in refused.stderr
    assert _domstate(name) == "shut off (saved)"  # no QEMU was started

    _ok("restore", str(first), "--wait-agent")
    assert _marked(name) == "ram-1"  # the saved RAM came back
    _ok("destroy", name)
    again = _vl("restore", str(first))
    assert again.returncode == 3 and "restored already" in again.stderr, again.stderr
    assert _domstate(name) == "shut off (destroyed)"

    _ok("start", name, "--wait-agent")  # the image was consumed: a fresh boot is fine
    _mark(name, "ram-2")
    second = save_files("second")
    _ok("save", name, str(second))
    out = _ok("start", name, "--discard-saved", "--wait-agent")
    assert f"discarded the saved image {second}" in out, out
    assert _marked(name) == ""  # booted fresh: that RAM is gone
    _ok("destroy", name)
    stale = _vl("restore", str(second))
    assert stale.returncode == 3 and "it is stale" in stale.stderr, stale.stderr
    assert _domstate(name) == "shut off (destroyed)"

    # a managed save stays libvirt's own: start restores it
    _ok("start", name, "--wait-agent")
    _mark(name, "ram-3")
    _ok("managedsave", name)
    _ok("start", name, "--wait-agent")
    assert _marked(name) == "ram-3"


def test_a_save_whose_process_was_killed_is_reconciled(
        make_vm: Callable[..., str], save_files: Callable[[str], Path],
        isolated_home: Path) -> None:
    """SIGKILL while libvirt writes the image: libvirt finishes it anyway, and the next
    start refuses to boot over it."""
    name = make_vm(dirty_mib=96)  # RAM the guest keeps writing: a save of seconds
    _ok("start", name, "--wait-agent")
    path = save_files("killed")
    proc = subprocess.Popen([*VIRTLIFE, "-c", URI, "save", name, str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 60
        while not path.exists():  # libvirt made the file: it is inside the save call
            assert proc.poll() is None, "the save ended before the file showed"
            assert time.monotonic() < end, "libvirt never started writing the image"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    with sqlite3.connect(isolated_home / "virtlife.db") as db:
        status = db.execute("SELECT status FROM saved_images").fetchall()
    assert status == [("saving",)]  # killed inside the call: nothing settled it
    end = time.monotonic() + 120
    while _domstate(name) != "shut off (saved)":  # libvirt finishes without its client
        assert time.monotonic() < end, _domstate(name)
        time.sleep(0.2)

    refused = _vl("start", name)
    assert refused.returncode == 3 and str(path) in refused.stderr, refused.stderr
    assert _domstate(name) == "shut off (saved)"
    with sqlite3.connect(isolated_home / "virtlife.db") as db:
        row = db.execute("SELECT status, why FROM saved_images").fetchone()
    assert row[0] == "saved" and "reconciled" in row[1], row
    _ok("restore", str(path))
    assert _domstate(name) == "running (restored)"
    assert os.path.getsize(path) > 1_000_000
