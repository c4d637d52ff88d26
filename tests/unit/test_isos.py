"""The virtio-win driver ISO: built from synthetic driver trees, read back with pycdlib.

Each test lays out a driver tree under tmp_path (the ISO layout or the RPM's), builds
the ISO with ``services.isos.build_iso`` and reads it back through pycdlib's three
views: Joliet (Windows), Rock Ridge (Linux) and plain ISO9660.
"""

from __future__ import annotations

import io
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pycdlib
import pytest

from virtlife import errors
from virtlife.services import isos
from virtlife.services.isos import Layout, build_iso, iso9660_name, joliet_name, scan_drivers

LONG = "A Very Long Mixed-Case Driver Name Made For Windows 11 (x64).inf"  # 64 bytes


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def iso_layout(root: Path) -> Path:
    """A tree like the virtio-win ISO's contents, with long, mixed-case and deep names."""
    _write(root / "NetKVM" / "w10" / "amd64" / "netkvm.inf", "netkvm w10 amd64")
    _write(root / "NetKVM" / "w10" / "amd64" / "NetKVM.sys", "netkvm driver")
    _write(root / "viostor" / "2k22" / "amd64" / LONG, "long name")
    _write(root / "vioserial" / "w11" / "ARM64" / "vioser.inf", "vioser arm64")
    _write(root / "qxldod" / "w10" / "amd64" / "qxldod.inf", "qxl")
    _write(root / "guest-agent" / "qemu-ga-x86_64.msi", "msi x86_64")
    _write(root / "guest-agent" / "qemu-ga-i386.msi", "msi i386")
    # nine folders deep: deeper than ISO9660's eight levels (Rock Ridge relocates it)
    _write(root / "Balloon" / "a" / "b" / "c" / "d" / "e" / "f" / "g" / "h" / "Deep.TXT",
           "deep")
    _write(root / "virtio-win_license.txt", "license")
    return root


def rpm_layout(root: Path) -> Path:
    """The virtio-win RPM's /usr/share/virtio-win: drivers/by-driver, by-os, guest-agent."""
    by_driver = root / "drivers" / "by-driver"
    for driver in ("NetKVM", "viostor", "vioserial", "qxl"):
        _write(by_driver / driver / "w10" / "amd64" / f"{driver.lower()}.inf", driver)
    by_os = root / "drivers" / "by-os" / "amd64" / "w10"
    by_os.mkdir(parents=True)
    os.symlink(by_driver / "NetKVM" / "w10" / "amd64" / "netkvm.inf", by_os / "netkvm.inf")
    _write(root / "guest-agent" / "qemu-ga-x86_64.msi", "msi")
    return root


class Iso:
    """An ISO opened with pycdlib: its names in each view, and file contents."""

    def __init__(self, path: Path) -> None:
        self.iso = pycdlib.PyCdlib()
        self.iso.open(str(path))

    def close(self) -> None:
        self.iso.close()

    def paths(self, view: str) -> set[str]:
        """Every file and folder path in ``view`` (rr_path, joliet_path or iso_path)."""
        found: set[str] = set()
        for top, dirs, files in self.iso.walk(**{view: "/"}):
            base = top.rstrip("/")
            found.update(f"{base}/{name}" for name in (*dirs, *files))
        return found

    def read(self, **where: str) -> str:
        out = io.BytesIO()
        self.iso.get_file_from_iso_fp(out, **where)
        return out.getvalue().decode()


@pytest.fixture
def opened() -> Iterator[list[Iso]]:
    isos_opened: list[Iso] = []
    yield isos_opened
    for iso in isos_opened:
        iso.close()


def _open(path: Path, opened: list[Iso]) -> Iso:
    iso = Iso(path)
    opened.append(iso)
    return iso


def test_rock_ridge_and_joliet_keep_every_name_and_content(tmp_path: Path,
                                                           opened: list[Iso]) -> None:
    tree = iso_layout(tmp_path / "tree")
    report = build_iso(tree, tmp_path / "out.iso")
    iso = _open(report.path, opened)
    expected = {"/" + p.relative_to(tree).as_posix() for p in tree.rglob("*")}
    rr = iso.paths("rr_path") - {"/rr_moved"}  # Rock Ridge's relocation folder
    assert rr == expected
    assert iso.paths("joliet_path") == expected
    for path in tree.rglob("*"):
        if path.is_file():
            name = "/" + path.relative_to(tree).as_posix()
            assert iso.read(rr_path=name) == path.read_text()
            assert iso.read(joliet_path=name) == path.read_text()
    assert report.files == 9 and report.warnings == ()
    assert report.layout is Layout.ISO and report.size == report.path.stat().st_size


def test_a_name_too_long_for_joliet_is_shortened_there_only_and_said(
        tmp_path: Path, opened: list[Iso]) -> None:
    tree = iso_layout(tmp_path / "tree")
    name = "x" * 70 + ".inf"
    _write(tree / "viostor" / name, "too long for Windows")
    report = build_iso(tree, tmp_path / "out.iso")
    iso = _open(report.path, opened)
    assert iso.read(rr_path=f"/viostor/{name}") == "too long for Windows"
    assert iso.read(joliet_path=f"/viostor/{'x' * 60}.inf") == "too long for Windows"
    assert report.warnings == (
        f"viostor/{name} is {'x' * 60}.inf on Windows (Joliet names are at most 64 bytes, "
        'without * / : ; ? \\ " < > |)',)


def test_iso9660_names_are_generated_valid_and_unique(tmp_path: Path,
                                                      opened: list[Iso]) -> None:
    tree = iso_layout(tmp_path / "tree")
    _write(tree / "NetKVM" / "w10" / "amd64" / "netkvm.cat", "clash 1")  # NETKVM.CAT
    _write(tree / "NetKVM" / "w10" / "amd64" / "NETKVM.CATALOG", "clash 2")  # NETKVM.CAT too
    iso = _open(build_iso(tree, tmp_path / "out.iso").path, opened)
    names = iso.paths("iso_path")
    for path in names:
        name = path.rsplit("/", 1)[1]
        assert re.fullmatch(r"[A-Z0-9_]{1,8}(\.[A-Z0-9_]{0,3};1)?", name), name
    amd64 = {p.rsplit("/", 1)[1] for p in names if p.startswith("/NETKVM/W10/AMD64/")}
    assert len(amd64) == 4  # netkvm.inf, NetKVM.sys and the two clashing ones
    assert iso.read(rr_path="/NetKVM/w10/amd64/NETKVM.CATALOG") == "clash 2"
    assert iso.iso.pvd.volume_identifier.decode().rstrip() == "VIRTIO-WIN"


def test_missing_drivers_and_agent_are_warned_and_the_iso_is_still_built(
        tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    _write(tree / "viostor" / "w10" / "viostor.inf", "only the disk driver")
    report = build_iso(tree, tmp_path / "out.iso")
    assert report.path.exists() and report.files == 1
    text = "\n".join(report.warnings)
    for missing in ("no vioserial folder", "no NetKVM folder", "no qxl or qxldod folder",
                    "no guest-agent installer (qemu-ga*.msi)"):
        assert missing in text
    assert "viostor" not in text
    assert len(report.warnings) == 4


def test_qxl_and_an_agent_msi_anywhere_satisfy_the_checks(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    for driver in ("vioserial", "VIOSTOR", "netkvm", "qxl"):  # case does not matter
        _write(tree / driver / "x.inf", driver)
    _write(tree / "tools" / "Agent" / "QEMU-GA-x86_64.MSI", "msi")
    assert scan_drivers(tree).warnings == ()


def test_rpm_layout_puts_by_driver_at_the_top_and_the_agent_beside_it(
        tmp_path: Path, opened: list[Iso]) -> None:
    root = rpm_layout(tmp_path / "virtio-win")
    for given in (root / "drivers", root):  # the drivers folder, or the RPM's top
        out = tmp_path / f"{given.name}.iso"
        report = build_iso(given, out)
        assert report.layout is Layout.RPM and report.warnings == ()
        iso = _open(out, opened)
        assert iso.paths("joliet_path") >= {"/NetKVM/w10/amd64/netkvm.inf",
                                            "/guest-agent/qemu-ga-x86_64.msi", "/qxl"}
        assert not any("by-os" in p or "by-driver" in p for p in iso.paths("rr_path"))
    # the agent folder beside drivers/ is part of the tree: no ISO may be written there
    with pytest.raises(errors.InvalidInput, match="inside the driver tree"):
        build_iso(root / "drivers", root / "guest-agent" / "drivers.iso")


def test_symlinked_files_are_followed_and_loops_skipped(tmp_path: Path,
                                                        opened: list[Iso]) -> None:
    tree = iso_layout(tmp_path / "tree")
    outside = _write(tmp_path / "elsewhere" / "shared.cat", "shared catalog")
    os.symlink(outside, tree / "viostor" / "shared.cat")
    os.symlink(tree, tree / "NetKVM" / "loop")  # back to the top: a loop
    os.symlink(tmp_path / "elsewhere", tree / "extra")  # a folder elsewhere: followed
    os.symlink(tmp_path / "missing", tree / "dangling")
    report = build_iso(tree, tmp_path / "out.iso")
    iso = _open(report.path, opened)
    assert iso.read(rr_path="/viostor/shared.cat") == "shared catalog"
    assert iso.read(joliet_path="/extra/shared.cat") == "shared catalog"
    paths = iso.paths("rr_path")
    assert not any(p.startswith("/NetKVM/loop") for p in paths) and "/dangling" not in paths
    text = "\n".join(report.warnings)
    assert "loop: it loops back to a folder that contains it" in text
    assert "dangling: a symlink to nothing" in text


@pytest.mark.parametrize("kind", ["missing", "empty", "file", "only-empty-folders"])
def test_a_driver_tree_with_nothing_to_put_on_the_iso_is_bad_input(
        tmp_path: Path, kind: str) -> None:
    drivers = tmp_path / "drivers"
    if kind == "empty":
        drivers.mkdir()
    elif kind == "file":
        _write(drivers, "not a folder")
    elif kind == "only-empty-folders":
        (drivers / "NetKVM" / "w10").mkdir(parents=True)
    with pytest.raises(errors.InvalidInput) as caught:
        build_iso(drivers, tmp_path / "out.iso")
    assert caught.value.exit_code == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == (
        [] if kind == "missing" else ["drivers"])


def test_an_existing_iso_is_kept_unless_forced(tmp_path: Path, opened: list[Iso]) -> None:
    tree = iso_layout(tmp_path / "tree")
    out = tmp_path / "out.iso"
    build_iso(tree, out, label="older")
    older = out.read_bytes()
    with pytest.raises(errors.AlreadyExists, match="pass --force"):
        build_iso(tree, out)
    assert out.read_bytes() == older
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.iso", "tree"]
    build_iso(tree, out, force=True, label="drivers-1.2")
    iso = _open(out, opened)
    assert iso.iso.pvd.volume_identifier.decode().rstrip() == "DRIVERS-1.2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.iso", "tree"]


@pytest.mark.parametrize(("out", "message"), [
    ("tree/NetKVM/drivers.iso", "inside the driver tree"),
    ("no-such-dir/drivers.iso", "there is no folder"),
    ("tree", "is a folder"),
])
def test_a_bad_output_path_is_refused_before_anything_is_written(
        tmp_path: Path, out: str, message: str) -> None:
    tree = iso_layout(tmp_path / "tree")
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(errors.InvalidInput, match=message):
        build_iso(tree, tmp_path / out)
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("label", ["", "x" * 33, "VIRTIO WIN", "virtio/win"])
def test_a_bad_label_is_refused(tmp_path: Path, label: str) -> None:
    with pytest.raises(errors.InvalidInput, match="cannot be a volume label"):
        build_iso(iso_layout(tmp_path / "tree"), tmp_path / "out.iso", label=label)
    assert not (tmp_path / "out.iso").exists()


def test_a_failed_write_leaves_neither_the_iso_nor_a_temporary_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = iso_layout(tmp_path / "tree")
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    def full_disk(self: object, fp: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pycdlib.PyCdlib, "write_fp", full_disk)
    with pytest.raises(errors.OperationFailed, match="No space left on device"):
        build_iso(tree, out_dir / "drivers.iso")
    assert list(out_dir.iterdir()) == []


def test_an_unreadable_file_is_bad_input_not_a_silently_missing_driver(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = iso_layout(tmp_path / "tree")
    secret = tree / "NetKVM" / "w10" / "amd64" / "netkvm.inf"
    real_access = os.access
    monkeypatch.setattr(isos.os, "access",
                        lambda p, mode: False if Path(p) == secret else real_access(p, mode))
    with pytest.raises(errors.InvalidInput, match=r"netkvm\.inf: permission denied"):
        build_iso(tree, tmp_path / "out.iso")
    assert not (tmp_path / "out.iso").exists()


def test_iso9660_names_fit_8_3_and_number_clashes() -> None:
    taken: set[str] = set()
    assert iso9660_name("netkvm.inf", is_dir=False, taken=taken) == "NETKVM.INF"
    assert iso9660_name("NetKVM.INF", is_dir=False, taken=taken) == "NETKVM_1.INF"
    assert iso9660_name("net kvm-driver.catalog", is_dir=False, taken=taken) == "NET_KVM_.CAT"
    assert iso9660_name("README", is_dir=False, taken=taken) == "README."
    assert iso9660_name(".hidden", is_dir=False, taken=taken) == "_.HID"
    assert iso9660_name("guest-agent", is_dir=True, taken=taken) == "GUEST_AG"
    assert iso9660_name("Guest-Agent", is_dir=True, taken=taken) == "GUEST__1"
    assert iso9660_name("Ünïcode.sys", is_dir=False, taken=taken) == "_N_CODE.SYS"


def test_joliet_names_stay_but_for_forbidden_characters_and_length() -> None:
    taken: set[str] = set()
    assert joliet_name("NetKVM.sys", taken=taken) == "NetKVM.sys"
    assert joliet_name("netkvm.SYS", taken=taken) == "netkvm~1.SYS"  # Windows ignores case
    assert joliet_name("a:b?.inf", taken=taken) == "a_b_.inf"
    long = "x" * 80 + ".inf"
    short = joliet_name(long, taken=taken)
    assert short == "x" * 60 + ".inf" and len(short.encode()) == 64
    assert joliet_name(long, taken=taken) == "x" * 58 + "~1.inf"
    wide = joliet_name("é" * 40, taken=taken)  # two bytes each
    assert wide == "é" * 32


def _other_things(where: Path) -> dict[str, Path]:
    """Paths ending in .iso that --force must never replace: a text file, a disk image,
    a FIFO, a socket, a device node and a link to one (as /dev/null was replaced)."""
    import socket

    things = {"text": _write(where / "notes.iso", "not an ISO\n"),
              "qcow2": where / "disk.iso"}
    things["qcow2"].write_bytes(b"QFI\xfb" + b"\0" * 40000)
    os.mkfifo(where / "fifo.iso")
    things["fifo"] = where / "fifo.iso"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(where / "sock.iso"))
    sock.close()
    things["socket"] = where / "sock.iso"
    (where / "null.iso").symlink_to("/dev/null")
    things["link to /dev/null"] = where / "null.iso"
    if os.geteuid() == 0:
        os.mknod(where / "dev.iso", 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's
        things["device node"] = where / "dev.iso"
    return things


def test_force_replaces_only_an_iso_image_never_a_device_socket_fifo_link_or_disk(
        tmp_path: Path) -> None:
    tree = iso_layout(tmp_path / "tree")
    where = tmp_path / "out"
    where.mkdir()
    things = _other_things(where)
    before = {name: os.lstat(path) for name, path in things.items()}
    for name, path in things.items():
        with pytest.raises(errors.InvalidInput, match="not an ISO image") as err:
            build_iso(tree, path, force=True)
        assert "--force replaces only" in str(err.value), name
    after = {name: os.lstat(path) for name, path in things.items()}
    assert [(a.st_ino, a.st_mode) for a in after.values()] == [
        (b.st_ino, b.st_mode) for b in before.values()]
    assert sorted(p.name for p in where.iterdir()) == sorted(p.name for p in things.values())
    assert os.path.exists("/dev/null") and stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_out_must_end_in_iso(tmp_path: Path) -> None:
    tree = iso_layout(tmp_path / "tree")
    with pytest.raises(errors.InvalidInput, match=r"does not end in \.iso"):
        build_iso(tree, tmp_path / "drivers.img")
    assert not (tmp_path / "drivers.img").exists()


def test_an_iso_image_is_told_from_other_files(tmp_path: Path) -> None:
    from virtlife.services.isos import is_iso_image

    build_iso(iso_layout(tmp_path / "tree"), tmp_path / "a.iso")
    assert is_iso_image(tmp_path / "a.iso")
    others = tmp_path / "others"
    others.mkdir()
    assert not any(is_iso_image(p) for p in _other_things(others).values())
