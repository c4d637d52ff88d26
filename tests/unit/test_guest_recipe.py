"""The test guest's recipe, cache and packing logic, without building anything.

No network, no apt, no kernel: the recipe inputs are swapped for temporary copies,
and the ELF and cpio helpers are fed bytes made here. A few tests of the host
preparation helpers that need no daemon sit at the end.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from virtlife.errors import LabError
from virtlife.lab import common, guest, hostprep
from virtlife.lab.guest import GuestImage, KernelPackage

SCRIPTS = {name for name, place in guest.GUEST_FILES.items() if place.mode & 0o111}


# --------------------------------------------------------------------------- fixtures


class FakeInputs:
    """Stand-ins for every recipe input, each of which a test may change."""

    def __init__(self, root: Path) -> None:
        self.guestfiles = root / "guestfiles"
        self.busybox = root / "busybox"
        self.qemu_ga = root / "qemu-ga"
        self.kernel = KernelPackage("linux-image-6.1.0-99-cloud-amd64", "6.1.999-1")


@pytest.fixture
def inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeInputs:
    fake = FakeInputs(tmp_path)
    shutil.copytree(guest.GUESTFILES, fake.guestfiles)
    fake.busybox.write_bytes(b"busybox 1")
    fake.qemu_ga.write_bytes(b"qemu-ga 1")
    monkeypatch.setattr(guest, "GUESTFILES", fake.guestfiles)
    monkeypatch.setattr(guest, "BUSYBOX", fake.busybox)
    monkeypatch.setattr(guest, "QEMU_GA", fake.qemu_ga)
    monkeypatch.setattr(guest, "_shared_libraries", lambda binary, ldd=None: [])
    monkeypatch.setattr(guest, "_resolve_kernel_package", lambda: fake.kernel)
    monkeypatch.setenv("VIRTLIFE_CACHE", str(tmp_path / "cache"))
    return fake


def fake_build(out: Path, digest: str, kver: str = "6.1.0-99-cloud-amd64") -> None:
    """Lay out what a finished build leaves in ``out``, stamped with ``digest``."""
    out.mkdir(parents=True, exist_ok=True)
    for name in (guest.KERNEL_FILE, guest.INITRD_FILE, guest.DISK_FILE):
        (out / name).write_bytes(b"x")
    manifest = {"recipe_hash": digest, "kernel_version": kver}
    (out / guest.MANIFEST_FILE).write_text(json.dumps(manifest))
    (out / guest.STAMP_FILE).write_text(digest + "\n")


# --------------------------------------------------------------------------- guest files


def test_every_guest_file_has_a_place_and_every_place_a_file() -> None:
    on_disk = {p.name for p in guest.GUESTFILES.iterdir() if p.is_file()}
    assert on_disk == set(guest.GUEST_FILES)


def test_scripts_start_with_a_shebang_and_only_they_are_executable_in_the_guest() -> None:
    for name, place in guest.GUEST_FILES.items():
        starts_with_shebang = (guest.GUESTFILES / name).read_bytes().startswith(b"#!/bin/sh\n")
        assert starts_with_shebang == (name in SCRIPTS), name
        assert place.mode in (0o755, 0o644, 0o600), (name, oct(place.mode))


def test_scripts_are_executable_in_the_source_tree_too() -> None:
    for name in SCRIPTS:
        assert os.access(guest.GUESTFILES / name, os.X_OK), name


@pytest.mark.skipif(not Path("/bin/busybox").exists(), reason="needs busybox for sh -n")
@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_script_parses_with_busybox_sh(name: str) -> None:
    done = subprocess.run(
        ["/bin/busybox", "sh", "-n", str(guest.GUESTFILES / name)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_shadow_is_private_and_the_rest_of_etc_is_readable() -> None:
    assert guest.GUEST_FILES["shadow"].mode == 0o600
    assert guest.GUEST_FILES["passwd"].mode == 0o644


def test_os_release_names_the_virtlife_guest() -> None:
    fields = dict(
        line.split("=", 1)
        for line in (guest.GUESTFILES / "os-release").read_text().splitlines()
        if "=" in line
    )
    assert fields["ID"] == "virtlife-guest"
    assert fields["NAME"] == '"virtlife test guest"'


def test_inittab_starts_rcs_and_respawns_the_agent_and_a_serial_shell() -> None:
    lines = (guest.GUESTFILES / "inittab").read_text().splitlines()
    assert "::sysinit:/etc/init.d/rcS" in lines
    assert "::respawn:/etc/init.d/qga" in lines
    assert "ttyS0::respawn:-/bin/sh" in lines
    qga = (guest.GUESTFILES / "qga").read_text()
    assert '-m virtio-serial -p "$port"' in qga
    assert "port=/dev/virtio-ports/org.qemu.guest_agent.0" in qga
    assert "-F/etc/qemu/fsfreeze-hook" in qga  # the freeze and thaw are logged in the guest
    assert guest.GUEST_FILES["fsfreeze-hook"].path == "etc/qemu/fsfreeze-hook"


def test_rcs_skips_acpid_only_for_the_ignore_acpi_option() -> None:
    rcs = (guest.GUESTFILES / "rcS").read_text()
    assert '*" virtlife.acpi=ignore "*)' in rcs
    assert "acpid -l" in rcs.rsplit("virtlife.acpi=ignore", 1)[1]  # started otherwise


def test_guest_loads_the_drivers_the_lab_domains_need() -> None:
    assert guest.guest_modules() == [
        "virtio_pci",
        "virtio_console",
        "virtio_net",
        "virtio_blk",
        "virtio_balloon",
        "virtio_scsi",
        "sr_mod",
        "isofs",
        "button",
        "evdev",
        "pvpanic",
        "pvpanic-mmio",
    ]


def test_rcs_starts_the_dirtier_only_for_its_kernel_option() -> None:
    rcs = (guest.GUESTFILES / "rcS").read_text()
    assert 'virtlife.dirty=*) /usr/bin/dirty "${w#virtlife.dirty=}"' in rcs
    assert "/run/dirty.count" in (guest.GUESTFILES / "dirty").read_text()


# --------------------------------------------------------------------------- recipe hash


def test_recipe_hash_is_stable_when_nothing_changes(inputs: FakeInputs) -> None:
    assert guest.recipe_hash() == guest.recipe_hash()


def test_recipe_hash_changes_when_a_guest_file_changes(inputs: FakeInputs) -> None:
    before = guest.recipe_hash()
    rcs = inputs.guestfiles / "rcS"
    rcs.write_text(rcs.read_text() + "# one more line\n")
    assert guest.recipe_hash() != before


def test_recipe_hash_changes_when_a_guest_file_is_added(inputs: FakeInputs) -> None:
    before = guest.recipe_hash()
    (inputs.guestfiles / "motd").write_text("hello\n")
    assert guest.recipe_hash() != before


def test_recipe_hash_changes_with_the_kernel_package_version(inputs: FakeInputs) -> None:
    before = guest.recipe_hash()
    inputs.kernel = KernelPackage(inputs.kernel.name, "6.1.999-2")
    assert guest.recipe_hash() != before


@pytest.mark.parametrize("binary", ["busybox", "qemu_ga"])
def test_recipe_hash_changes_when_a_host_binary_changes(inputs: FakeInputs, binary: str) -> None:
    before = guest.recipe_hash()
    path: Path = getattr(inputs, binary)
    path.write_bytes(path.read_bytes() + b" patched")
    assert guest.recipe_hash() != before


def test_recipe_hash_names_the_missing_package(
    inputs: FakeInputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(guest, "QEMU_GA", inputs.qemu_ga.with_name("absent"))
    with pytest.raises(LabError, match=r"/absent is missing; install qemu-guest-agent$"):
        guest.recipe_hash()


# --------------------------------------------------------------------------- cache


def test_cached_guest_returns_the_image_when_the_stamp_is_current(
    inputs: FakeInputs, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    digest = guest.recipe_hash()
    fake_build(out, digest)
    assert guest.cached_guest(out) == GuestImage(
        kernel=out / "vmlinuz",
        initrd=out / "initrd.img",
        disk=out / "disk.qcow2",
        kernel_version="6.1.0-99-cloud-amd64",
        recipe_hash=digest,
    )


def test_cached_guest_is_none_without_a_stamp(inputs: FakeInputs, tmp_path: Path) -> None:
    out = tmp_path / "out"
    fake_build(out, guest.recipe_hash())
    (out / guest.STAMP_FILE).unlink()
    assert guest.cached_guest(out) is None


def test_cached_guest_is_none_when_the_recipe_changed(inputs: FakeInputs, tmp_path: Path) -> None:
    out = tmp_path / "out"
    fake_build(out, guest.recipe_hash())
    (inputs.guestfiles / "hostname").write_text("renamed\n")
    assert guest.cached_guest(out) is None


@pytest.mark.parametrize("name", ["vmlinuz", "initrd.img", "disk.qcow2", "guest.json"])
def test_cached_guest_is_none_when_an_artifact_is_missing(
    inputs: FakeInputs, tmp_path: Path, name: str
) -> None:
    out = tmp_path / "out"
    fake_build(out, guest.recipe_hash())
    (out / name).unlink()
    assert guest.cached_guest(out) is None


def test_cached_guest_is_none_when_the_manifest_is_from_another_build(
    inputs: FakeInputs, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    fake_build(out, guest.recipe_hash())
    (out / guest.MANIFEST_FILE).write_text(json.dumps({"recipe_hash": "0" * 64}))
    assert guest.cached_guest(out) is None


def test_cached_guest_is_none_when_a_recipe_input_is_missing(
    inputs: FakeInputs, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    fake_build(out, guest.recipe_hash())
    inputs.busybox.unlink()
    assert guest.cached_guest(out) is None


def test_build_guest_returns_the_cached_guest_without_building(
    inputs: FakeInputs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    fake_build(out, guest.recipe_hash())

    def no_build(*_args: Any) -> GuestImage:
        raise AssertionError("rebuilt a current guest")

    monkeypatch.setattr(guest, "_build", no_build)
    messages: list[str] = []
    image = guest.build_guest(out, progress=messages.append)
    assert image.kernel == out / "vmlinuz"
    assert messages == [f"test guest in {out} is current"]


@pytest.mark.parametrize("force, stale", [(True, False), (False, True)])
def test_build_guest_rebuilds_when_forced_or_stale(
    inputs: FakeInputs,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    force: bool,
    stale: bool,
) -> None:
    out = tmp_path / "out"
    fake_build(out, "stale" if stale else guest.recipe_hash())
    builds: list[str] = []

    def record(out_dir: Path, kernel: KernelPackage, digest: str, say: Any) -> GuestImage:
        builds.append(digest)
        return GuestImage(out_dir, out_dir, out_dir, "k", digest)

    monkeypatch.setattr(guest, "_build", record)
    guest.build_guest(out, force=force)
    assert builds == [guest.recipe_hash()]


def test_publish_writes_the_stamp_last_and_makes_files_world_readable(tmp_path: Path) -> None:
    staging, out = tmp_path / "staging", tmp_path / "out"
    staging.mkdir()
    out.mkdir()
    for name in guest._ARTIFACTS:
        (staging / name).write_bytes(b"new")
        os.chmod(staging / name, 0o600)
    (out / guest.STAMP_FILE).write_text("old\n")
    guest._publish(staging, out, "abc")
    assert (out / guest.STAMP_FILE).read_text() == "abc\n"
    for name in (*guest._ARTIFACTS, guest.STAMP_FILE):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name


def test_make_dirs_gives_new_directories_0755_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        guest._make_dirs(tmp_path / "a" / "b")
    finally:
        os.umask(old)
    for d in (tmp_path / "a", tmp_path / "a" / "b"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o755


# --------------------------------------------------------------------------- kernel package


APT_CACHE_SHOW = """\
Package: linux-image-cloud-amd64
Source: linux-signed-amd64 (6.1.176+1)
Version: 6.1.176-1
Depends: linux-image-6.1.0-50-cloud-amd64 (= 6.1.176-1)
Description: Linux for x86-64 cloud (meta-package)
 a continuation line

Package: linux-image-cloud-amd64
Version: 6.1.170-1
"""


def test_control_fields_reads_the_first_paragraph_only() -> None:
    fields = guest.control_fields(APT_CACHE_SHOW)
    assert fields["Version"] == "6.1.176-1"
    assert fields["Description"].endswith("\na continuation line")


def test_apt_answer_names_the_real_kernel_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guest, "_run", lambda cmd, what, **kw: APT_CACHE_SHOW)
    assert guest._ask_apt_for_kernel("apt-cache") == KernelPackage(
        "linux-image-6.1.0-50-cloud-amd64", "6.1.176-1"
    )


def test_kernel_package_is_asked_of_apt_only_when_its_lists_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "deb.debian.org_debian_dists_bookworm_InRelease").write_text("one")
    monkeypatch.setattr(guest, "APT_LISTS", lists)
    monkeypatch.setenv("VIRTLIFE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(guest, "_tool", lambda name: name)
    asked: list[str] = []

    def ask(apt_cache: str) -> KernelPackage:
        asked.append(apt_cache)
        return KernelPackage("linux-image-x", str(len(asked)))

    monkeypatch.setattr(guest, "_ask_apt_for_kernel", ask)
    assert guest._resolve_kernel_package().version == "1"
    assert guest._resolve_kernel_package().version == "1"
    (lists / "deb.debian.org_debian_dists_bookworm_InRelease").write_text("after update")
    assert guest._resolve_kernel_package().version == "2"
    assert len(asked) == 2


# --------------------------------------------------------------------------- modules and ELF


def make_elf(sections: dict[str, bytes], interpreter: bool = False) -> bytes:
    """A minimal little-endian ELF64 with the given sections (and a PT_INTERP if asked)."""
    names = b"\0" + b"".join(n.encode() + b"\0" for n in [*sections, ".shstrtab"])
    phnum = 1
    body = bytearray(64 + 56 * phnum)
    headers: list[bytes] = [b"\0" * 64]
    name_at = 1
    for name, data in [*sections.items(), (".shstrtab", names)]:
        headers.append(
            struct.pack("<IIQQQQIIQQ", name_at, 1, 0, 0, len(body), len(data), 0, 0, 1, 0)
        )
        name_at += len(name) + 1
        body += data
    shoff = len(body)
    body += b"".join(headers)
    body[0:16] = b"\x7fELF\x02\x01\x01" + b"\0" * 9
    struct.pack_into("<QQ", body, 0x20, 64, shoff)
    struct.pack_into("<HHHHH", body, 0x36, 56, phnum, 64, len(headers), len(headers) - 1)
    struct.pack_into("<I", body, 64, 3 if interpreter else 1)
    return bytes(body)


def test_modinfo_reads_depends_from_the_modinfo_section() -> None:
    elf = make_elf(
        {
            ".text": b"\x90" * 8,
            ".modinfo": b"license=GPL\0depends=virtio,virtio_ring,net_failover\0name=virtio_net\0",
        }
    )
    info = guest._modinfo(elf)
    assert info["name"] == "virtio_net"
    assert guest._module_depends(info) == ["virtio", "virtio_ring", "net_failover"]


def test_module_without_dependencies_has_an_empty_list() -> None:
    info = guest._modinfo(make_elf({".modinfo": b"depends=\0name=evdev\0"}))
    assert guest._module_depends(info) == []


def test_is_dynamic_tells_static_from_dynamic_executables() -> None:
    assert guest._is_dynamic(make_elf({}, interpreter=True))
    assert not guest._is_dynamic(make_elf({}, interpreter=False))


def test_non_elf_input_is_a_lab_error() -> None:
    with pytest.raises(LabError, match="not a little-endian 64-bit ELF"):
        guest._modinfo(b"#!/bin/sh\n")


DEPS = {
    "virtio_net": ["virtio_ring", "virtio", "net_failover"],
    "net_failover": ["failover"],
    "virtio_ring": [],
    "virtio": [],
    "failover": [],
    "pvpanic_mmio": ["pvpanic"],
    "pvpanic": [],
}


def test_module_closure_puts_dependencies_first_and_normalises_dashes() -> None:
    order = guest._module_closure(["pvpanic-mmio", "virtio_net"], DEPS.__getitem__, set(DEPS))
    assert order == [
        "pvpanic",
        "pvpanic_mmio",
        "virtio_ring",
        "virtio",
        "failover",
        "net_failover",
        "virtio_net",
    ]


def test_module_closure_names_who_needed_a_missing_module() -> None:
    known = set(DEPS) - {"failover"}
    with pytest.raises(LabError, match=r"module failover \(needed by net_failover\) not found"):
        guest._module_closure(["virtio_net"], DEPS.__getitem__, known)


# --------------------------------------------------------------------------- initramfs


def read_newc(data: bytes) -> Iterator[tuple[str, int, int, int, bytes, tuple[int, int]]]:
    """(name, mode, uid, gid, data, (rdevmajor, rdevminor)) per entry, checking alignment."""
    pos = 0
    while True:
        assert pos % 4 == 0
        assert data[pos : pos + 6] == b"070701"
        f = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = f[11], f[6]
        name = data[pos + 110 : pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += -pos % 4
        body = data[pos : pos + filesize]
        pos += filesize
        pos += -pos % 4
        if name == "TRAILER!!!":
            assert pos == len(data)
            return
        yield name, f[1], f[2], f[3], body, (f[9], f[10])


def test_newc_archive_holds_the_tree_owned_by_root_plus_device_nodes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "busybox").write_bytes(b"\x7fELF...")
    os.chmod(root / "bin" / "busybox", 0o755)
    (root / "etc").mkdir()
    (root / "etc" / "shadow").write_text("root::1:0:99999:7:::\n")
    os.chmod(root / "etc" / "shadow", 0o600)
    (root / "init").symlink_to("/bin/busybox")
    buf = io.BytesIO()
    guest.write_newc(root, buf, devices={"dev/console": (0o600, 5, 1)})

    entries = {e[0]: e for e in read_newc(buf.getvalue())}
    assert list(entries) == ["bin", "bin/busybox", "etc", "etc/shadow", "init", "dev/console"]
    assert all(uid == 0 and gid == 0 for _, _, uid, gid, _, _ in entries.values())
    assert entries["bin/busybox"][1] == stat.S_IFREG | 0o755
    assert entries["bin/busybox"][4] == b"\x7fELF..."
    assert entries["etc/shadow"][1] == stat.S_IFREG | 0o600
    assert entries["init"][1] == stat.S_IFLNK | 0o777
    assert entries["init"][4] == b"/bin/busybox"
    assert entries["dev/console"][1] == stat.S_IFCHR | 0o600
    assert entries["dev/console"][5] == (5, 1)


def test_newc_archive_is_reproducible(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a").write_text("x")
    first, second = io.BytesIO(), io.BytesIO()
    guest.write_newc(root, first, devices={})
    os.utime(root / "a", (0, 12345))
    guest.write_newc(root, second, devices={})
    assert first.getvalue() == second.getvalue()


def test_ldd_output_gives_library_paths_including_the_loader(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ldd = (
        "\tlinux-vdso.so.1 (0x00007ff0f5043000)\n"
        "\tlibglib-2.0.so.0 => /lib/x86_64-linux-gnu/libglib-2.0.so.0 (0x00007ff0f4dc0000)\n"
        "\t/lib64/ld-linux-x86-64.so.2 (0x00007ff0f5045000)\n"
    )
    monkeypatch.setattr(guest, "_run", lambda cmd, what, **kw: ldd)
    assert guest._shared_libraries(Path("/usr/sbin/qemu-ga"), "ldd") == [
        Path("/lib/x86_64-linux-gnu/libglib-2.0.so.0"),
        Path("/lib64/ld-linux-x86-64.so.2"),
    ]


def test_a_library_ldd_cannot_find_is_a_lab_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guest, "_run", lambda cmd, what, **kw: "\tliburing.so.2 => not found\n")
    with pytest.raises(LabError, match=r"needs liburing.so.2 => not found"):
        guest._shared_libraries(Path("/usr/sbin/qemu-ga"), "ldd")


def test_a_failing_tool_is_a_one_line_lab_error() -> None:
    with pytest.raises(LabError) as err:
        guest._run(
            ["sh", "-c", "echo noise; echo 'E: Unable to locate package' >&2; exit 100"],
            "apt-get download x",
            hint="check the network and apt",
        )
    assert str(err.value) == (
        "cannot build the test guest: apt-get download x failed: "
        "E: Unable to locate package; check the network and apt"
    )


# --------------------------------------------------------------------------- host preparation


def test_enable_postcopy_sets_the_sysctl_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sysctl = tmp_path / "unprivileged_userfaultfd"
    sysctl.write_text("0\n")
    monkeypatch.setattr(hostprep, "USERFAULTFD_SYSCTL", sysctl)
    assert hostprep.enable_postcopy() == "vm.unprivileged_userfaultfd: 0 -> 1 (post-copy migration)"
    assert sysctl.read_text() == "1\n"
    assert hostprep.enable_postcopy() is None


def test_enable_postcopy_is_a_no_op_without_the_sysctl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hostprep, "USERFAULTFD_SYSCTL", tmp_path / "absent")
    assert hostprep.enable_postcopy() is None


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_fix_kvm_node_makes_it_group_kvm_read_write_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import grp

    try:
        kvm_gid = grp.getgrnam("kvm").gr_gid
    except KeyError:
        pytest.skip("no kvm group on this host")
    node = tmp_path / "kvm"  # a plain file stands in for the device node
    node.write_text("")
    os.chmod(node, 0o600)
    monkeypatch.setattr(hostprep, "KVM_NODE", node)
    assert hostprep.fix_kvm_node() == f"{node}: root:root 0600 -> root:kvm 0660"
    st = node.stat()
    assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (kvm_gid, 0o660)
    assert hostprep.fix_kvm_node() is None


def test_fix_kvm_node_does_nothing_without_a_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hostprep, "KVM_NODE", tmp_path / "absent")
    assert hostprep.fix_kvm_node() is None


def test_ensure_daemons_does_nothing_when_both_sockets_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hostprep, "accepts_unix", lambda sock: True)

    def no_start(*_args: Any) -> None:
        raise AssertionError("started a daemon that was running")

    monkeypatch.setattr(hostprep, "_start_daemon", no_start)
    assert hostprep.ensure_daemons() == []


def test_ensure_daemons_starts_virtlogd_before_libvirtd(monkeypatch: pytest.MonkeyPatch) -> None:
    up: set[Path] = set()
    monkeypatch.setattr(hostprep, "accepts_unix", lambda sock: sock in up)
    monkeypatch.setattr(hostprep, "find_tool", lambda program: f"/usr/sbin/{program}")
    started: list[str] = []

    def start(daemon: str, exe: str, sock: Path, timeout: float) -> None:
        started.append(daemon)
        up.add(sock)

    monkeypatch.setattr(hostprep, "_start_daemon", start)
    actions = hostprep.ensure_daemons()
    assert started == ["virtlogd", "libvirtd"]
    assert len(actions) == 2 and actions[0].startswith("started virtlogd")


def test_socket_probe_is_false_for_a_path_nobody_listens_on(tmp_path: Path) -> None:
    assert not common.accepts_unix(tmp_path / "nobody-sock")


def fake_daemon(tmp_path: Path, sock: Path, failures: int) -> str:
    """A ``-d`` daemon that fails ``failures`` times (pid file busy), then listens on ``sock``."""
    script = tmp_path / "fake-daemon"
    script.write_text(
        f"""#!{sys.executable}
import os, socket, sys, time
tries = {str(tmp_path / "tries")!r}
n = int(open(tries).read()) if os.path.exists(tries) else 0
open(tries, "w").write(str(n + 1))
if n < {failures}:
    sys.exit("Failed to acquire pid file '/run/fake.pid': Resource temporarily unavailable")
if os.fork():
    sys.exit(0)
s = socket.socket(socket.AF_UNIX)
s.bind({str(sock)!r})
s.listen()
s.settimeout(0.2)
end = time.monotonic() + 3
while time.monotonic() < end:
    try:
        s.accept()[0].close()
    except OSError:
        pass
"""
    )
    script.chmod(0o755)
    return str(script)


def test_start_daemon_retries_while_the_old_one_still_holds_its_pid_file(tmp_path: Path) -> None:
    sock = tmp_path / "sock"
    hostprep._start_daemon("fakedaemon", fake_daemon(tmp_path, sock, failures=2), sock, 5.0)
    assert (tmp_path / "tries").read_text() == "3"
    assert common.accepts_unix(sock)


def test_start_daemon_gives_up_with_the_daemons_own_words(tmp_path: Path) -> None:
    sock = tmp_path / "sock"
    exe = fake_daemon(tmp_path, sock, failures=1000)
    with pytest.raises(LabError, match=r"^cannot start fakedaemon: Failed to acquire pid file"):
        # long enough for the failing daemon to be run and heard on a loaded machine
        hostprep._start_daemon("fakedaemon", exe, sock, 3.0)
