"""``windows-drivers-iso`` and ``attach-iso`` run as the real ``virtlife`` command: output,
JSON, warnings on stderr, exit codes, and nothing written on bad input. ``attach-iso``
runs against the test driver's seeded node (its refusals and journal rows; the test
driver has no device hot-plug, the real attach is tested on QEMU)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pycdlib
from test_cli import (
    EXIT_INVALID_TRANSITION,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    assert_ok,
    assert_one_line_error,
    on_node,
    virtlife,
)

from support import NODE_URI
from virtlife.store import open_store

EXIT_FAILED = 1


def driver_tree(root: Path, *drivers: str) -> Path:
    for driver in drivers:
        inf = root / driver / "w10" / "amd64" / f"{driver} Driver For Windows 10.inf"
        inf.parent.mkdir(parents=True)
        inf.write_text(f"{driver} inf")
    return root


def test_windows_drivers_iso_writes_the_iso_and_reports_it_as_json(tmp_path: Path) -> None:
    tree = driver_tree(tmp_path / "tree", "NetKVM", "viostor", "vioserial", "qxldod")
    (tree / "guest-agent").mkdir()
    (tree / "guest-agent" / "qemu-ga-x86_64.msi").write_bytes(b"msi")
    out = tmp_path / "virtio-win.iso"
    run = virtlife("windows-drivers-iso", "--drivers", str(tree), "--out", str(out), "--json")
    assert_ok(run)
    report = json.loads(run.out)
    assert report == {"path": str(out), "label": "VIRTIO-WIN", "layout": "virtio-win ISO",
                      "files": 5, "directories": 13, "size": out.stat().st_size,
                      "warnings": []}
    assert run.err == ""
    iso = pycdlib.PyCdlib()
    iso.open(str(out))
    try:
        data = io.BytesIO()
        iso.get_file_from_iso_fp(
            data, joliet_path="/NetKVM/w10/amd64/NetKVM Driver For Windows 10.inf")
        assert data.getvalue() == b"NetKVM inf"
    finally:
        iso.close()


def test_missing_drivers_are_warnings_on_stderr_and_the_iso_is_written(tmp_path: Path) -> None:
    tree = driver_tree(tmp_path / "tree", "viostor")
    out = tmp_path / "partial.iso"
    run = virtlife("windows-drivers-iso", "--drivers", str(tree), "--out", str(out))
    assert_ok(run)
    assert run.out.startswith(f"wrote {out}: 1 file in 3 folders")
    warnings = run.err_lines
    assert len(warnings) == 4 and all(w.startswith("virtlife: warning: no ") for w in warnings)
    assert any("no vioserial folder" in w for w in warnings)
    assert any("qemu-ga*.msi" in w for w in warnings)
    assert out.exists()


def test_an_existing_iso_needs_force(tmp_path: Path) -> None:
    tree = driver_tree(tmp_path / "tree", "NetKVM", "viostor", "vioserial", "qxl")
    out = tmp_path / "out.iso"
    out.write_text("keep me")
    run = virtlife("windows-drivers-iso", "--drivers", str(tree), "--out", str(out))
    # the missing-agent warning is printed only once the ISO is written: here it is not
    message = assert_one_line_error(run, EXIT_FAILED)
    assert message == f"{out} exists; pass --force to replace it, or choose another --out"
    assert out.read_text() == "keep me"
    forced = virtlife("windows-drivers-iso", "--drivers", str(tree), "--out", str(out),
                      "--force")
    message = assert_one_line_error(forced, EXIT_USAGE)  # "keep me" is no ISO image
    assert message.startswith(f"cannot replace {out}: it is not an ISO image")
    assert out.read_text() == "keep me"
    out.unlink()
    assert_ok(virtlife("windows-drivers-iso", "--drivers", str(tree), "--out", str(out)))
    first = out.stat().st_ino
    forced = virtlife("windows-drivers-iso", "--drivers", str(tree), "--out", str(out),
                      "--force", "--label", "NEWER")
    assert_ok(forced)
    assert out.read_bytes()[32769:32774] == b"CD001"  # an ISO9660 volume descriptor
    assert out.stat().st_ino != first  # replaced


def test_force_never_replaces_a_device_node_through_a_link(tmp_path: Path) -> None:
    tree = driver_tree(tmp_path / "tree", "viostor")
    out = tmp_path / "null.iso"
    out.symlink_to("/dev/null")
    run = virtlife("windows-drivers-iso", "--drivers", str(tree), "--out", str(out),
                   "--force")
    assert "symbolic link, not an ISO image" in assert_one_line_error(run, EXIT_USAGE)
    assert out.is_symlink() and Path("/dev/null").is_char_device()


def test_out_must_be_named_iso_like_the_apis(tmp_path: Path) -> None:
    tree = driver_tree(tmp_path / "tree", "viostor")
    run = virtlife("windows-drivers-iso", "--drivers", str(tree), "--out",
                   str(tmp_path / "drivers.img"))
    assert "does not end in .iso" in assert_one_line_error(run, EXIT_USAGE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tree"]


def test_bad_driver_trees_are_bad_input_and_write_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for drivers, says in ((tmp_path / "missing", "there is no"),
                          (tmp_path / "empty", "holds no files")):
        run = virtlife("windows-drivers-iso", "--drivers", str(drivers), "--out",
                       str(tmp_path / "out.iso"))
        assert says in assert_one_line_error(run, EXIT_USAGE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]
    usage = virtlife("windows-drivers-iso", "--out", str(tmp_path / "out.iso"))
    assert "Missing option '--drivers'" in assert_one_line_error(usage, EXIT_USAGE)


def test_attach_iso_is_refused_by_the_vms_state_and_journalled(tmp_path: Path,
                                                               isolated_home: Path) -> None:
    iso = tmp_path / "x.iso"
    iso.write_bytes(b"\0" * 2048)
    run = on_node("attach-iso", "vm-crashed", str(iso))
    assert assert_one_line_error(run, EXIT_INVALID_TRANSITION).startswith(
        "cannot attach-iso vm-crashed: it is crashed")
    with open_store(isolated_home / "virtlife.db") as store:
        [entry] = store.journal.list(vm="vm-crashed")
    assert (entry.operation, entry.outcome) == ("attach-iso", "refused")


def test_attach_iso_of_a_file_that_is_not_on_the_host_is_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "nope.iso"
    run = on_node("attach-iso", "vm-running", str(missing))
    assert assert_one_line_error(run, EXIT_NOT_FOUND) == (
        f"cannot attach {missing} to vm-running: there is no such file on host {_host()}")
    detach = on_node("attach-iso", "vm-off", str(missing), "--detach")
    assert assert_one_line_error(detach, EXIT_NOT_FOUND).startswith(
        f"vm-off has no CD-ROM holding {missing}; `virtlife attach-iso vm-off {missing}`")


def test_attach_iso_bus_sata_on_a_running_vm_is_refused_in_one_line(
        tmp_path: Path, isolated_home: Path) -> None:
    iso = tmp_path / "virtio-win.iso"
    iso.write_bytes(b"\0" * 2048)
    run = on_node("attach-iso", "vm-running", str(iso), "--bus", "sata")
    assert assert_one_line_error(run, EXIT_INVALID_TRANSITION) == (
        f"cannot attach {iso} to vm-running on SATA: it is running, and a SATA CD-ROM "
        "cannot be hot-plugged; shut vm-running down first, or use --bus scsi")
    with open_store(isolated_home / "virtlife.db") as store:
        [entry] = store.journal.list(vm="vm-running")
    assert (entry.operation, entry.outcome) == ("attach-iso", "refused")


def test_attach_iso_of_a_text_file_is_refused_as_bad_input_and_journalled(
        tmp_path: Path, isolated_home: Path) -> None:
    # issue 15: a text file was accepted as a CD
    text = tmp_path / "readme.iso"
    text.write_text("this is not a CD\n")
    run = on_node("attach-iso", "vm-off", str(text))
    assert assert_one_line_error(run, EXIT_USAGE) == (
        f"cannot attach {text} to vm-off: it is not an ISO 9660 image (it has no ISO 9660 "
        "volume descriptor at sector 16); give the path of an ISO file (.iso)")
    with open_store(isolated_home / "virtlife.db") as store:
        [entry] = store.journal.list(vm="vm-off")
    assert entry.operation == "attach-iso"


def test_attach_iso_bus_is_checked_when_parsed(tmp_path: Path) -> None:
    iso = str(tmp_path / "x.iso")
    bad = on_node("attach-iso", "vm-off", iso, "--bus", "floppy")
    assert "'floppy' is not one of 'scsi', 'sata', 'ide'" in assert_one_line_error(
        bad, EXIT_USAGE)
    both = on_node("attach-iso", "vm-off", iso, "--bus", "ide", "--detach")
    assert assert_one_line_error(both, EXIT_USAGE).startswith(
        "--bus is for attaching: --detach finds the CD-ROM on any bus")


def test_attach_iso_help_tells_windows_to_use_sata() -> None:
    run = virtlife("attach-iso", "--help")
    assert_ok(run)
    assert "--bus [scsi|sata|ide]" in run.out
    assert "virtlife attach-iso win1 /var/lib/libvirt/images/virtio-win.iso --bus sata" in run.out


def _host() -> str:
    return NODE_URI  # with -c URI and no inventory entry, the host is named by its URI
