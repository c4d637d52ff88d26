"""Builds the lab's test guest: a Debian cloud kernel, a busybox initramfs running the
QEMU guest agent, and a small ext4 data disk, cached under a hash of the recipe.

Role: turn Debian packages (the host's ``busybox-static`` and ``qemu-guest-agent``, and
the ``linux-image-cloud-amd64`` kernel fetched with ``apt-get download``, never
installed) into three files that a libvirt domain boots to a responding agent in a few
seconds under TCG. The guest's scripts and config files are plain files in
``guestfiles/``; this module only decides where each one goes. It must not import
libvirt or define domains: tests and the lab do that with the paths it returns.

Run ``python -m virtlife.lab.guest [--force]`` to build (or find) the guest and print
its paths.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import hashlib
import itertools
import json
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple, Protocol

from virtlife import config
from virtlife.errors import LabError
from virtlife.lab.common import Say


class Writer(Protocol):
    """Anything with ``write(bytes)``: a file, a GzipFile, a BytesIO."""

    def write(self, data: bytes, /) -> object: ...


KERNEL_META_PACKAGE = "linux-image-cloud-amd64"
BUSYBOX = Path("/bin/busybox")
QEMU_GA = Path("/usr/sbin/qemu-ga")
DATA_DISK_MIB = 64
DATA_DISK_LABEL = "virtlife-data"
GUESTFILES = Path(__file__).with_name("guestfiles")
APT_LISTS = Path("/var/lib/apt/lists")

KERNEL_FILE = "vmlinuz"
INITRD_FILE = "initrd.img"
DISK_FILE = "disk.qcow2"
MANIFEST_FILE = "guest.json"
STAMP_FILE = "recipe.sha256"
_ARTIFACTS = (KERNEL_FILE, INITRD_FILE, DISK_FILE, MANIFEST_FILE)


class Place(NamedTuple):
    """Where a file of ``guestfiles/`` goes in the guest, and its mode there."""

    path: str
    mode: int


# Every file in guestfiles/ and its place in the guest (a unit test keeps the two in step).
GUEST_FILES: dict[str, Place] = {
    "inittab": Place("etc/inittab", 0o644),
    "rcS": Place("etc/init.d/rcS", 0o755),
    "rcK": Place("etc/init.d/rcK", 0o755),
    "qga": Place("etc/init.d/qga", 0o755),
    "modules": Place("etc/modules", 0o644),
    "shutdown": Place("sbin/shutdown", 0o755),
    "chpasswd": Place("usr/sbin/chpasswd", 0o755),
    "dirty": Place("usr/bin/dirty", 0o755),
    "acpi-powerbutton": Place("etc/acpi/PWRF/00000080", 0o755),
    "fsfreeze-hook": Place("etc/qemu/fsfreeze-hook", 0o755),
    "udhcpc.script": Place("etc/udhcpc.script", 0o755),
    "os-release": Place("etc/os-release", 0o644),
    "passwd": Place("etc/passwd", 0o644),
    "shadow": Place("etc/shadow", 0o600),
    "group": Place("etc/group", 0o644),
    "hostname": Place("etc/hostname", 0o644),
}

# Directories of the guest's root file system (the initramfs), with their modes.
_GUEST_DIRS: dict[str, int] = {
    "bin": 0o755,
    "sbin": 0o755,
    "usr/bin": 0o755,
    "usr/sbin": 0o755,
    "etc/init.d": 0o755,
    "etc/acpi/PWRF": 0o755,
    "etc/qemu": 0o755,
    "proc": 0o755,
    "sys": 0o755,
    "dev": 0o755,
    "run": 0o755,
    "tmp": 0o1777,
    "mnt/data": 0o755,
    "root": 0o700,
    "var/log": 0o755,
    "var/lib": 0o755,
    "lib/modules": 0o755,
}

# Host tools the build runs, and the Debian package that provides each.
_TOOL_PACKAGES: dict[str, str] = {
    "apt-cache": "apt",
    "apt-get": "apt",
    "dpkg": "dpkg",
    "ldd": "libc-bin",
    "mkfs.ext4": "e2fsprogs",
    "qemu-img": "qemu-utils",
}


@dataclass(frozen=True)
class GuestImage:
    """A built test guest: boot ``kernel`` with ``initrd``; attach a *copy* of ``disk``."""

    kernel: Path
    initrd: Path
    disk: Path
    kernel_version: str
    recipe_hash: str


class KernelPackage(NamedTuple):
    """The real package behind ``linux-image-cloud-amd64`` (e.g. linux-image-6.1.0-50-...)."""

    name: str
    version: str


# --------------------------------------------------------------------------- public API


def recipe_hash() -> str:
    """The sha256 naming everything a build would use; a different value means rebuild.

    It covers this module's source, every file in ``guestfiles/``, the kernel package
    apt would fetch (name and version), and the sha256 of the host's busybox, qemu-ga
    and the libraries qemu-ga links. apt is asked only when its package lists changed
    since the last answer, since ``apt-cache`` alone takes about 0.4 s.
    """
    return _recipe_hash(_resolve_kernel_package())


def cached_guest(out_dir: Path | None = None) -> GuestImage | None:
    """The guest in ``out_dir`` if it is complete and its recipe is current, else None."""
    out = _out_dir(out_dir)
    recorded = _read_stamp(out)
    image = _image_in(out, recorded) if recorded else None
    if image is None:
        return None
    try:
        current = recipe_hash()
    except LabError:  # a recipe input is missing: "current" cannot be shown
        return None
    return image if current == recorded else None


def build_guest(
    out_dir: Path | None = None,
    *,
    force: bool = False,
    progress: Say | None = None,
) -> GuestImage:
    """Build the test guest into ``out_dir`` (default ``config.guest_dir()``).

    Returns the cached guest at once when its recipe is current, unless ``force``.
    Artifacts are built in a temporary directory and renamed into place; the stamp
    ``recipe.sha256`` is written last, so a half-built guest never looks current.
    Concurrent builders of one ``out_dir`` are serialised by a lock file.
    Raises LabError when a tool or package is missing or a step fails.
    """
    say: Say = progress or _quiet
    out = _out_dir(out_dir)
    _make_dirs(out)
    with _locked(out / ".lock"):
        kernel_pkg = _resolve_kernel_package()
        digest = _recipe_hash(kernel_pkg)
        if not force and _read_stamp(out) == digest:
            image = _image_in(out, digest)
            if image is not None:
                say(f"test guest in {out} is current")
                return image
        for stale in out.glob(".build-*"):  # left by a build that was killed
            shutil.rmtree(stale, ignore_errors=True)
        _warn_if_unreachable(out, say)
        return _build(out, kernel_pkg, digest, say)


# --------------------------------------------------------------------------- build steps


def _build(out: Path, kernel_pkg: KernelPackage, digest: str, say: Say) -> GuestImage:
    started = time.monotonic()
    tools = {name: _tool(name) for name in _TOOL_PACKAGES}
    _require_file(BUSYBOX, "busybox-static")
    _require_file(QEMU_GA, "qemu-guest-agent")
    if _is_dynamic(BUSYBOX.read_bytes()):
        raise LabError(
            f"cannot build the test guest: {BUSYBOX} is dynamically linked; install busybox-static"
        )
    deb = _download_kernel(kernel_pkg, tools["apt-get"], say)
    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=out))
    try:
        with tempfile.TemporaryDirectory(prefix="virtlife-guest-") as tmp:
            work = Path(tmp)
            say(f"unpacking {deb.name}")
            tree = work / "kernel"
            _run([tools["dpkg"], "-x", str(deb), str(tree)], f"dpkg -x {deb.name}")
            kver = _kernel_version(tree)
            shutil.copyfile(tree / "boot" / f"vmlinuz-{kver}", staging / KERNEL_FILE)
            say("assembling the initramfs")
            root = work / "root"
            _assemble_root(root, tree, kver, tools["ldd"])
            _write_initramfs(root, staging / INITRD_FILE)
            say(f"making the {DATA_DISK_MIB} MiB ext4 data disk")
            _make_data_disk(staging / DISK_FILE, work, tools["mkfs.ext4"], tools["qemu-img"])
        seconds = round(time.monotonic() - started, 2)
        manifest = {
            "recipe_hash": digest,
            "kernel_package": kernel_pkg.name,
            "kernel_package_version": kernel_pkg.version,
            "kernel_version": kver,
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "build_seconds": seconds,
            "sizes": {name: (staging / name).stat().st_size for name in _ARTIFACTS[:3]},
        }
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        _publish(staging, out, digest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say(f"built the test guest in {seconds:.2f} s (kernel {kver})")
    image = _image_in(out, digest)
    if image is None:  # only if someone deletes files under our lock
        raise LabError(f"cannot build the test guest: {out} lost files right after the build")
    return image


def _publish(staging: Path, out: Path, digest: str) -> None:
    """Rename the staged artifacts into ``out``, then write the stamp last."""
    (out / STAMP_FILE).unlink(missing_ok=True)
    for name in _ARTIFACTS:
        os.chmod(staging / name, 0o644)
        os.replace(staging / name, out / name)
    tmp_stamp = staging / STAMP_FILE
    tmp_stamp.write_text(digest + "\n")
    os.chmod(tmp_stamp, 0o644)
    os.replace(tmp_stamp, out / STAMP_FILE)


def _assemble_root(root: Path, tree: Path, kver: str, ldd: str) -> None:
    """Lay out the guest's root file system in ``root``."""
    for rel, mode in _GUEST_DIRS.items():
        path = root / rel
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, mode)
    (root / "var" / "run").symlink_to("/run")
    for name, place in GUEST_FILES.items():
        _install(GUESTFILES / name, root / place.path, place.mode)
    # busybox and its applets; our own files (e.g. /sbin/shutdown) take precedence.
    _install(BUSYBOX, root / "bin" / "busybox", 0o755)
    for rel in _busybox_applets():
        link = root / rel
        if not os.path.lexists(link):
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to("/bin/busybox")
    (root / "init").symlink_to("/bin/busybox")  # the kernel runs /init: busybox init
    # the guest agent and the shared libraries it links
    _install(QEMU_GA, root / QEMU_GA.relative_to("/"), 0o755)
    for lib in _shared_libraries(QEMU_GA, ldd):
        _install(lib, root / lib.relative_to("/"), stat.S_IMODE(lib.stat().st_mode))
    _install_modules(root, tree, kver)


def _install_modules(root: Path, tree: Path, kver: str) -> None:
    """Copy the modules named in guestfiles/modules plus their dependencies, then depmod."""
    src = tree / "lib" / "modules" / kver
    index = _module_index(src)
    if not index:
        raise LabError(f"cannot build the test guest: no *.ko modules in {src}")

    def depends(name: str) -> list[str]:
        return _module_depends(_modinfo(index[name].read_bytes()))

    dest = root / "lib" / "modules" / kver
    for name in _module_closure(guest_modules(), depends, set(index)):
        module = index[name]
        _install(module, dest / module.relative_to(src), 0o644)
    for extra in ("modules.builtin", "modules.order"):
        if (src / extra).is_file():
            _install(src / extra, dest / extra, 0o644)
    _run([str(BUSYBOX), "depmod", "-b", str(root), kver], "busybox depmod")


def guest_modules() -> list[str]:
    """The modules the guest loads at boot, from guestfiles/modules (comments skipped)."""
    names = []
    for line in (GUESTFILES / "modules").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line)
    return names


def _make_data_disk(dest: Path, work: Path, mkfs: str, qemu_img: str) -> None:
    raw = work / "disk.raw"
    with open(raw, "wb") as f:
        f.truncate(DATA_DISK_MIB * 1024 * 1024)
    _run(
        [mkfs, "-q", "-F", "-L", DATA_DISK_LABEL, "-E", "root_owner=0:0", str(raw)],
        "mkfs.ext4 of the data disk",
    )
    _run(
        [qemu_img, "convert", "-f", "raw", "-O", "qcow2", str(raw), str(dest)],
        "qemu-img convert of the data disk",
    )


# --------------------------------------------------------------------------- kernel package


def _resolve_kernel_package() -> KernelPackage:
    """The package and version behind the meta package, cached per state of apt's lists."""
    fingerprint = _apt_lists_fingerprint()
    cache = config.cache_dir() / "kernel-package.json"
    try:
        data = json.loads(cache.read_text())
        if data["meta"] == KERNEL_META_PACKAGE and data["fingerprint"] == fingerprint:
            return KernelPackage(str(data["name"]), str(data["version"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    pkg = _ask_apt_for_kernel(_tool("apt-cache"))
    record = {"meta": KERNEL_META_PACKAGE, "fingerprint": fingerprint, **pkg._asdict()}
    with contextlib.suppress(OSError):  # only a cache: a read-only cache dir is fine
        _make_dirs(cache.parent)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}")
        tmp.write_text(json.dumps(record) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, cache)
    return pkg


def _apt_lists_fingerprint() -> str:
    """Changes whenever ``apt-get update`` changed what apt-cache would answer."""
    h = hashlib.sha256()
    with contextlib.suppress(OSError):
        for entry in sorted(os.scandir(APT_LISTS), key=lambda e: e.name):
            if entry.is_file(follow_symlinks=False):
                st = entry.stat()
                h.update(f"{entry.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _ask_apt_for_kernel(apt_cache: str) -> KernelPackage:
    meta = KERNEL_META_PACKAGE
    text = _run(
        [apt_cache, "show", "--no-all-versions", meta],
        f"apt-cache show {meta}",
        hint="check /etc/apt/sources.list and run apt-get update",
    )
    fields = control_fields(text)
    for alternative in fields.get("Depends", "").split(","):
        match = re.match(r"\s*(linux-image-[^\s(|]+)\s*(?:\(\s*=\s*([^\s)]+)\s*\))?", alternative)
        if not match:
            continue
        name, version = match.group(1), match.group(2)
        if version is None:
            other = _run([apt_cache, "show", "--no-all-versions", name], f"apt-cache show {name}")
            version = control_fields(other).get("Version", "")
        if version:
            return KernelPackage(name, version)
    raise LabError(
        f"cannot build the test guest: {meta} depends on no linux-image package "
        f"(Depends: {fields.get('Depends', 'none')!r})"
    )


def control_fields(text: str) -> dict[str, str]:
    """The fields of the first paragraph of a Debian control text (as apt-cache shows)."""
    fields: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        if line[0] in " \t" and key:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def _download_kernel(pkg: KernelPackage, apt_get: str, say: Say) -> Path:
    """The kernel .deb from the download cache, fetching it with apt-get if absent."""
    debs = config.cache_dir() / "debs"
    _make_dirs(debs)
    stem = f"{pkg.name}_{pkg.version.replace(':', '%3a')}_"
    cached = sorted(p for p in debs.glob("*.deb") if p.name.startswith(stem))
    if cached:
        return cached[0]
    say(f"downloading {pkg.name} {pkg.version}")
    with tempfile.TemporaryDirectory(prefix=".download-", dir=debs) as tmp:
        cmd = [apt_get, "download", "-q"]
        if os.geteuid() == 0:  # the _apt sandbox user cannot write into our temp dir
            cmd += ["-o", "APT::Sandbox::User=root"]
        cmd.append(f"{pkg.name}={pkg.version}")
        _run(cmd, f"apt-get download {pkg.name}", cwd=Path(tmp), hint="check the network and apt")
        got = list(Path(tmp).glob("*.deb"))
        if len(got) != 1:
            raise LabError(
                f"cannot build the test guest: apt-get download {pkg.name} left "
                f"{len(got)} .deb files instead of one"
            )
        deb = debs / got[0].name
        os.chmod(got[0], 0o644)
        os.replace(got[0], deb)
    for old in debs.glob("linux-image-*.deb"):  # keep one kernel per flavour
        if old != deb and old.name.split("_")[0].endswith("-cloud-amd64"):
            old.unlink(missing_ok=True)
    return deb


def _kernel_version(tree: Path) -> str:
    modules = tree / "lib" / "modules"
    versions = sorted(p.name for p in modules.iterdir()) if modules.is_dir() else []
    if len(versions) != 1 or not (tree / "boot" / f"vmlinuz-{versions[0]}").is_file():
        raise LabError(
            f"cannot build the test guest: expected one kernel in the package, "
            f"found module trees {versions} in {modules}"
        )
    return versions[0]


# --------------------------------------------------------------------------- kernel modules


def _module_index(moddir: Path) -> dict[str, Path]:
    """Module name (with '_' for '-') -> its .ko file."""
    return {_module_name(p.name[: -len(".ko")]): p for p in sorted(moddir.rglob("*.ko"))}


def _module_name(name: str) -> str:
    return name.replace("-", "_")


def _module_closure(
    wanted: Sequence[str], depends: Callable[[str], list[str]], known: set[str]
) -> list[str]:
    """``wanted`` plus everything they depend on, each after its dependencies."""
    order: list[str] = []
    done: set[str] = set()
    visiting: set[str] = set()

    def visit(name: str, needed_by: str | None) -> None:
        key = _module_name(name)
        if key in done or key in visiting:
            return
        if key not in known:
            by = f" (needed by {needed_by})" if needed_by else ""
            raise LabError(f"cannot build the test guest: kernel module {name}{by} not found")
        visiting.add(key)
        for dep in depends(key):
            visit(dep, key)
        visiting.discard(key)
        done.add(key)
        order.append(key)

    for name in wanted:
        visit(name, None)
    return order


def _module_depends(info: dict[str, str]) -> list[str]:
    return [d for d in info.get("depends", "").split(",") if d]


def _modinfo(elf: bytes) -> dict[str, str]:
    """The key=value strings of a kernel module's ``.modinfo`` section (first value wins)."""
    section = _elf_section(elf, ".modinfo")
    info: dict[str, str] = {}
    for item in section.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            info.setdefault(key.decode(errors="replace"), value.decode(errors="replace"))
    return info


def _elf64_header(elf: bytes) -> tuple[int, int, int, int, int, int, int]:
    """(phoff, shoff, phentsize, phnum, shentsize, shnum, shstrndx) of a little-endian ELF64."""
    if elf[:4] != b"\x7fELF" or elf[4:6] != b"\x02\x01":
        raise LabError("cannot build the test guest: not a little-endian 64-bit ELF file")
    phoff, shoff = struct.unpack_from("<QQ", elf, 0x20)
    phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from("<HHHHH", elf, 0x36)
    return phoff, shoff, phentsize, phnum, shentsize, shnum, shstrndx


def _elf_section(elf: bytes, wanted: str) -> bytes:
    _, shoff, _, _, shentsize, shnum, shstrndx = _elf64_header(elf)

    def header(i: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, offset, size = struct.unpack_from(
            "<IIQQQQ", elf, shoff + i * shentsize
        )
        return name, offset, size

    _, strtab, _ = header(shstrndx)
    for i in range(shnum):
        name_at, offset, size = header(i)
        end = elf.index(b"\0", strtab + name_at)
        if elf[strtab + name_at : end].decode() == wanted:
            return elf[offset : offset + size]
    return b""


def _is_dynamic(elf: bytes) -> bool:
    """Whether an ELF executable asks for a dynamic loader (has a PT_INTERP header)."""
    phoff, _, phentsize, phnum, _, _, _ = _elf64_header(elf)
    return any(struct.unpack_from("<I", elf, phoff + i * phentsize)[0] == 3 for i in range(phnum))


# --------------------------------------------------------------------------- host binaries


def _shared_libraries(binary: Path, ldd: str | None = None) -> list[Path]:
    """The shared libraries ``ldd`` lists for ``binary``, loader included."""
    out = _run([ldd or _tool("ldd"), str(binary)], f"ldd {binary}")
    libs: list[Path] = []
    for line in out.splitlines():
        if "not found" in line:
            raise LabError(f"cannot build the test guest: {binary} needs {line.strip()}")
        match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if match:
            libs.append(Path(match.group(1)))
    return libs


def _busybox_applets() -> list[str]:
    """Install paths of every busybox applet, e.g. ``sbin/acpid``, ``usr/bin/[``."""
    out = _run([str(BUSYBOX), "--list-full"], "busybox --list-full")
    return [line.strip().lstrip("/") for line in out.splitlines() if line.strip()]


# --------------------------------------------------------------------------- initramfs


def _write_initramfs(root: Path, dest: Path) -> None:
    """Pack ``root`` as a gzip'd newc cpio archive, owned by root, with fixed mtimes.

    Written here rather than with cpio(1) so the archive is reproducible, owned by
    root whoever builds it, and carries /dev/console and /dev/null without mknod.
    """
    with open(dest, "wb") as raw, gzip.GzipFile("", "wb", 6, raw, mtime=0) as gz:
        write_newc(root, gz, devices={"dev/console": (0o600, 5, 1), "dev/null": (0o666, 1, 3)})


def write_newc(root: Path, out: Writer, devices: dict[str, tuple[int, int, int]]) -> None:
    """Write the tree ``root`` (then ``devices``: path -> (mode, major, minor)) as newc cpio."""
    inodes = itertools.count(1)

    def entry(name: str, mode: int, data: bytes = b"", nlink: int = 1, rdev: int = 0) -> None:
        encoded = name.encode() + b"\0"
        # ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
        fields: tuple[int, ...] = (next(inodes), mode, 0, 0, nlink, 0, len(data), 0, 0)
        fields += (os.major(rdev), os.minor(rdev), len(encoded), 0)
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        out.write(header + encoded + _pad4(len(header) + len(encoded)))
        out.write(data + _pad4(len(data)))

    for path in _walk(root):
        rel = path.relative_to(root).as_posix()
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            entry(rel, stat.S_IFLNK | 0o777, os.readlink(path).encode())
        elif stat.S_ISDIR(st.st_mode):
            entry(rel, stat.S_IFDIR | stat.S_IMODE(st.st_mode), nlink=2)
        elif stat.S_ISREG(st.st_mode):
            entry(rel, stat.S_IFREG | stat.S_IMODE(st.st_mode), path.read_bytes())
        else:
            raise LabError(f"cannot build the test guest: unexpected file type at {path}")
    for name, (mode, major, minor) in devices.items():
        entry(name, stat.S_IFCHR | mode, rdev=os.makedev(major, minor))
    entry("TRAILER!!!", 0)


def _walk(top: Path) -> Iterator[Path]:
    """Everything under ``top``, sorted, each directory before its contents."""
    for entry in sorted(os.scandir(top), key=lambda e: e.name):
        path = Path(entry.path)
        yield path
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(path)


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


# --------------------------------------------------------------------------- cache and files


def _recipe_hash(kernel: KernelPackage) -> str:
    _require_file(BUSYBOX, "busybox-static")
    _require_file(QEMU_GA, "qemu-guest-agent")
    h = hashlib.sha256()

    def part(label: str, data: bytes) -> None:
        h.update(f"{label}\0{len(data)}\0".encode() + data)

    part("builder", Path(__file__).read_bytes())
    for path in sorted(GUESTFILES.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            part(f"guestfile {path.name}", path.read_bytes())
    part("kernel package", f"{kernel.name}={kernel.version}".encode())
    for binary in (BUSYBOX, QEMU_GA, *_shared_libraries(QEMU_GA)):
        part(f"binary {binary}", hashlib.sha256(binary.read_bytes()).digest())
    return h.hexdigest()


def _read_stamp(out: Path) -> str | None:
    try:
        return (out / STAMP_FILE).read_text().strip() or None
    except OSError:
        return None


def _image_in(out: Path, digest: str) -> GuestImage | None:
    """The GuestImage in ``out`` if all artifacts exist and the manifest names ``digest``."""
    if not all((out / name).is_file() for name in _ARTIFACTS):
        return None
    try:
        manifest = json.loads((out / MANIFEST_FILE).read_text())
        kver = manifest["kernel_version"]
        if manifest["recipe_hash"] != digest or not isinstance(kver, str):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return GuestImage(
        kernel=out / KERNEL_FILE,
        initrd=out / INITRD_FILE,
        disk=out / DISK_FILE,
        kernel_version=kver,
        recipe_hash=digest,
    )


def _out_dir(out_dir: Path | None) -> Path:
    return Path(out_dir) if out_dir is not None else config.guest_dir()


def _make_dirs(path: Path) -> None:
    """mkdir -p, giving every directory it creates mode 0755 whatever the umask."""
    missing = []
    for p in [path, *path.parents]:
        if p.exists():
            break
        missing.append(p)
    for p in reversed(missing):
        with contextlib.suppress(FileExistsError):
            p.mkdir()
            os.chmod(p, 0o755)
    if not path.is_dir():
        raise LabError(f"cannot build the test guest: {path} is not a directory")


def _warn_if_unreachable(out: Path, say: Say) -> None:
    """QEMU runs as libvirt-qemu: every directory above the guest must be searchable."""
    for p in [out.resolve(), *out.resolve().parents]:
        if not os.stat(p).st_mode & stat.S_IXOTH:
            say(f"warning: {p} is not searchable by other users, so QEMU cannot open the guest")
            return


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _install(src: Path, dest: Path, mode: int) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    os.chmod(dest, mode)


def _require_file(path: Path, package: str) -> None:
    if not path.is_file():
        raise LabError(f"cannot build the test guest: {path} is missing; install {package}")


def _tool(name: str) -> str:
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
    found = shutil.which(name, path=search)
    if found is None:
        package = _TOOL_PACKAGES.get(name, name)
        raise LabError(f"cannot build the test guest: {name} is missing; install {package}")
    return found


def _run(cmd: list[str], what: str, *, cwd: Path | None = None, hint: str = "") -> str:
    """Run a host tool; its stdout, or LabError naming the step and its last error line."""
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as e:
        raise LabError(f"cannot build the test guest: {what} could not run: {e}") from e
    if done.returncode != 0:
        detail = f"exit status {done.returncode}"
        for stream in (done.stderr, done.stdout):  # the last line that says something
            lines = [ln.strip() for ln in stream.splitlines() if ln.strip()]
            if lines:
                detail = lines[-1]
                break
        tail = f"; {hint}" if hint else ""
        raise LabError(f"cannot build the test guest: {what} failed: {detail}{tail}")
    return done.stdout


def _quiet(_message: str) -> None:
    pass


# --------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m virtlife.lab.guest",
        description="Build (or find the cached) virtlife test guest and print its paths.",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if current")
    parser.add_argument("--out", type=Path, help=f"output directory (default {config.guest_dir()})")
    args = parser.parse_args(argv)
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:5.2f}s] {message}", file=sys.stderr)

    try:
        image = build_guest(args.out, force=args.force, progress=progress)
    except LabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"kernel:  {image.kernel}")
    print(f"initrd:  {image.initrd}")
    print(f"disk:    {image.disk}")
    print(f"version: {image.kernel_version}")
    print(f"recipe:  {image.recipe_hash}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
