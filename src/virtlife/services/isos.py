"""The virtio-win driver ISO: read a driver tree, check it, and write it as an ISO file.

``scan_drivers`` reads a driver tree in either layout virtio-win ships (the ISO's own,
with ``NetKVM/ viostor/ vioserial/ qxl/ ... guest-agent/`` at the top, or the RPM's,
with ``drivers/by-driver/<Driver>/`` and ``guest-agent/`` beside ``drivers/``), follows
symlinked files and folders (a folder that loops back to one of its parents is
skipped), and says which expected drivers are missing. ``build_iso`` writes it with
pycdlib, in pure Python: Joliet (what Windows reads) and Rock Ridge (what Linux reads)
keep every name as it is; the plain ISO9660 names are generated (8.3, upper case,
unique per folder). Every check runs before anything is written; the ISO is written
to a temporary file beside the target and renamed into place, never over an existing
file without ``force``. Runs on the client; no libvirt here, and nothing here prints.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from virtlife import errors
from virtlife.paths import check_path

if TYPE_CHECKING:
    from pycdlib import PyCdlib

DEFAULT_LABEL = "VIRTIO-WIN"
_LABEL = re.compile(r"[A-Za-z0-9_.-]{1,32}")

# The driver folders a Windows guest on virtlife needs, with what each one gives; the
# first name is the one to report, any of the names will do (casefolded).
EXPECTED_DRIVERS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("vioserial",), "the virtio-serial driver (the guest agent's channel)"),
    (("viostor",), "the virtio-blk disk driver"),
    (("NetKVM",), "the virtio-net network driver"),
    (("qxl", "qxldod"), "the QXL display driver"),
)
GUEST_AGENT_GLOB = "qemu-ga*.msi"
_AGENT_MSI = re.compile(r"qemu-ga.*\.msi", re.IGNORECASE)

# ISO9660 d-characters; Joliet forbids these (Windows' reserved ones as well).
_NOT_D_CHARS = re.compile(r"[^A-Z0-9_]")
_JOLIET_FORBIDDEN = re.compile(r'[\x00-\x1f*/:;?\\"<>|]')
JOLIET_MAX_BYTES = 64  # pycdlib counts a Joliet name's UTF-8 bytes against the 64 limit
FILE_MODE = 0o100444
DIR_MODE = 0o040555


class Layout(StrEnum):
    """How the driver tree given is laid out (the value is said to the user)."""

    ISO = "virtio-win ISO"  # driver folders at the top
    RPM = "virtio-win RPM"  # drivers/by-driver/<Driver>/..., guest-agent/ beside drivers/


@dataclass(frozen=True)
class TreeFile:
    """A file to put on the ISO: where it is read from, and its names on the ISO."""

    source: Path
    parts: tuple[str, ...]  # its path on the ISO, as the names it keeps (Joliet/RR)


@dataclass(frozen=True)
class DriverTree:
    """A scanned driver tree: what goes on the ISO, and what the user should know."""

    source: Path
    layout: Layout
    roots: tuple[Path, ...]  # the folders read (the RPM's by-driver/ and guest-agent/)
    directories: tuple[tuple[str, ...], ...]  # parents before their children
    files: tuple[TreeFile, ...]
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class IsoReport:
    path: Path
    label: str
    layout: Layout
    files: int
    directories: int
    size: int  # of the ISO file, in bytes
    warnings: tuple[str, ...]

    def __str__(self) -> str:
        files = f"{self.files} file" + ("" if self.files == 1 else "s")
        folders = f"{self.directories} folder" + ("" if self.directories == 1 else "s")
        return (f"wrote {self.path}: {files} in {folders}, "
                f"{self.size / 2**20:.1f} MiB, label {self.label} (from a {self.layout} "
                "tree)")

    def as_dict(self) -> dict[str, object]:
        return {"path": str(self.path), "label": self.label, "layout": self.layout.value,
                "files": self.files, "directories": self.directories, "size": self.size,
                "warnings": list(self.warnings)}


# -- names on the ISO (pure) -----------------------------------------------------------

def iso9660_name(name: str, *, is_dir: bool, taken: set[str]) -> str:
    """A valid ISO9660 identifier for ``name`` (8.3 d-characters for a file, 8 for a
    folder; no ``;1``), unique among ``taken`` in its folder (which it joins)."""
    if is_dir:
        stem, ext = name, ""
    else:
        stem, dot, ext = name.rpartition(".")
        if not dot:
            stem, ext = name, ""
    stem = _NOT_D_CHARS.sub("_", stem.upper())[:8] or "_"
    ext = _NOT_D_CHARS.sub("_", ext.upper())[:3]
    tail = f".{ext}" if ext else ("" if is_dir else ".")

    def numbered(n: int) -> str:
        digits = str(n)
        return f"{stem[:8 - len(digits) - 1]}_{digits}{tail}"

    candidate = f"{stem}{tail}"
    n = 0
    while candidate.casefold() in taken:
        n += 1
        if n > 9_999_999:
            raise errors.InvalidInput(f"too many names on the ISO like {name!r}")
        candidate = numbered(n)
    taken.add(candidate.casefold())
    return candidate


def joliet_name(name: str, *, taken: set[str]) -> str:
    """``name`` as Joliet keeps it: the same, but for characters Joliet (and Windows)
    forbid, shortened to 64 bytes keeping its extension, and unique (ignoring case, as
    Windows does) among ``taken`` in its folder (which it joins)."""
    clean = _JOLIET_FORBIDDEN.sub("_", name)
    stem, dot, ext = clean.rpartition(".")
    if not dot or not stem or len(ext.encode()) > 16:
        stem, ext = clean, ""
    tail = f".{ext}" if ext else ""

    def fit(text: str, extra: str) -> str:
        room = JOLIET_MAX_BYTES - len((extra + tail).encode())
        while len(text.encode()) > room:
            text = text[:-1]
        return text + extra + tail

    candidate = fit(stem, "")
    n = 0
    while candidate.casefold() in taken:
        n += 1
        candidate = fit(stem, f"~{n}")
    taken.add(candidate.casefold())
    return candidate


# -- reading the tree --------------------------------------------------------------------

def _layout(path: Path) -> tuple[Layout, list[tuple[Path, tuple[str, ...]]]]:
    """The tree's layout and its roots: (folder, where its contents go on the ISO)."""
    if (path / "by-driver").is_dir():  # .../virtio-win/drivers
        drivers, top = path, path.parent
    elif (path / "drivers" / "by-driver").is_dir():  # .../virtio-win
        drivers, top = path / "drivers", path
    else:
        return Layout.ISO, [(path, ())]
    roots: list[tuple[Path, tuple[str, ...]]] = [(drivers / "by-driver", ())]
    for agent in (drivers / "guest-agent", top / "guest-agent"):
        if agent.is_dir():
            roots.append((agent, ("guest-agent",)))
            break
    return Layout.RPM, roots


def _usable(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _Walk:
    """Collects the files and folders under the roots, with what was skipped and why."""

    def __init__(self) -> None:
        self.dirs: dict[tuple[str, ...], None] = {}
        self.files: dict[tuple[str, ...], TreeFile] = {}
        self.warnings: list[str] = []

    def root(self, folder: Path, dest: tuple[str, ...]) -> None:
        try:
            st = os.stat(folder)
        except OSError as err:
            raise errors.InvalidInput(f"cannot read {folder}: {err.strerror}") from err
        for i in range(1, len(dest) + 1):
            self.dirs.setdefault(dest[:i])
        self._folder(folder, dest, frozenset({(st.st_dev, st.st_ino)}))

    def _entries(self, folder: Path) -> Iterator[os.DirEntry[str]]:
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as err:
            raise errors.InvalidInput(
                f"cannot read the folder {folder}: {err.strerror}; the ISO needs all of "
                "it") from err
        yield from entries

    def _folder(self, folder: Path, dest: tuple[str, ...],
                parents: frozenset[tuple[int, int]]) -> None:
        for entry in self._entries(folder):
            path = Path(entry.path)
            if not _usable(entry.name):
                self.warnings.append(f"skipped {path!s}: its name is not UTF-8, which "
                                     "Joliet and Rock Ridge names must be")
                continue
            try:
                st = os.stat(path)  # follows symlinks
            except OSError as err:
                if entry.is_symlink():
                    self.warnings.append(f"skipped {path}: a symlink to nothing "
                                         f"({os.readlink(path)})")
                    continue
                raise errors.InvalidInput(f"cannot read {path}: {err.strerror}") from err
            parts = (*dest, entry.name)
            if stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in parents:
                    self.warnings.append(f"skipped {path}: it loops back to a folder "
                                         "that contains it")
                    continue
                self.dirs.setdefault(parts)
                self._folder(path, parts, parents | {key})
            elif stat.S_ISREG(st.st_mode):
                if not os.access(path, os.R_OK):
                    raise errors.InvalidInput(
                        f"cannot read {path}: permission denied; the ISO needs all of it")
                if parts in self.files:
                    self.warnings.append(f"skipped {path}: {'/'.join(parts)} is already "
                                         f"taken by {self.files[parts].source}")
                    continue
                self.files[parts] = TreeFile(path, parts)
            else:
                self.warnings.append(f"skipped {path}: not a regular file or folder")


def missing_drivers(tree: DriverTree) -> list[str]:
    """What the tree lacks of ``EXPECTED_DRIVERS`` and the guest-agent installer."""
    top = {p[0].casefold() for p in tree.directories if len(p) == 1}
    found: list[str] = []
    for names, what in EXPECTED_DRIVERS:
        if not any(n.casefold() in top for n in names):
            either = " or ".join(names)
            found.append(f"no {either} folder in {tree.source}: Windows guests will "
                         f"lack {what}")
    if not any(_AGENT_MSI.fullmatch(f.parts[-1]) for f in tree.files):
        found.append(f"no guest-agent installer ({GUEST_AGENT_GLOB}) in {tree.source}: "
                     "Windows guests cannot install the QEMU guest agent from this ISO")
    return found


def scan_drivers(path: str | Path) -> DriverTree:
    """Read the driver tree at ``path`` (either layout); ``InvalidInput`` when there is
    no such folder or it holds no file. Missing drivers are warnings."""
    source = Path(path)
    if not source.exists():
        raise errors.InvalidInput(
            f"there is no {source}: give the virtio-win driver folder, e.g. "
            "/usr/share/virtio-win/drivers or a copy of the virtio-win ISO's contents")
    if not source.is_dir():
        raise errors.InvalidInput(f"{source} is not a folder: give the virtio-win driver "
                                  "folder (--drivers DIR)")
    layout, roots = _layout(source)
    walk = _Walk()
    for folder, dest in roots:
        walk.root(folder, dest)
    if not walk.files:
        raise errors.InvalidInput(
            f"{source} holds no files ({layout} layout): there is nothing to put on the ISO")
    tree = DriverTree(source, layout, tuple(r for r, _ in roots), tuple(walk.dirs),
                      tuple(walk.files.values()), tuple(walk.warnings))
    return replace(tree, warnings=(*tree.warnings, *missing_drivers(tree)))


# -- writing the ISO ----------------------------------------------------------------------

@dataclass(frozen=True)
class _Names:
    iso: str  # absolute ISO9660 path (a file's ends in ;1)
    joliet: str  # absolute Joliet path
    rr: str  # the Rock Ridge name (the last part only)


class _Namer:
    """Generates the ISO9660 and Joliet paths of every entry, folder by folder."""

    def __init__(self) -> None:
        self._iso: dict[tuple[str, ...], str] = {(): ""}
        self._joliet: dict[tuple[str, ...], str] = {(): ""}
        self._taken_iso: dict[tuple[str, ...], set[str]] = {}
        self._taken_joliet: dict[tuple[str, ...], set[str]] = {}
        self.renamed: list[str] = []

    def names(self, parts: tuple[str, ...], *, is_dir: bool) -> _Names:
        parent, name = parts[:-1], parts[-1]
        iso = iso9660_name(name, is_dir=is_dir, taken=self._taken_iso.setdefault(parent, set()))
        jol = joliet_name(name, taken=self._taken_joliet.setdefault(parent, set()))
        if jol != name:
            self.renamed.append(f"{'/'.join(parts)} is {jol} on Windows (Joliet names are "
                                "at most 64 bytes, without * / : ; ? \\ \" < > |)")
        iso_path = f"{self._iso[parent]}/{iso}"
        jol_path = f"{self._joliet[parent]}/{jol}"
        if is_dir:
            self._iso[parts], self._joliet[parts] = iso_path, jol_path
            return _Names(iso_path, jol_path, name)
        return _Names(f"{iso_path};1", jol_path, name)


def check_label(label: str) -> str:
    if not _LABEL.fullmatch(label):
        raise errors.InvalidInput(
            f"{label!r} cannot be a volume label: use 1 to 32 letters, digits, _ . or -")
    return label.upper()


# ISO 9660: the volume descriptors start at sector 16 (of 2048 bytes); each one is a
# type byte, then the standard identifier "CD001".
_DESCRIPTOR_AT = 16 * 2048
_ISO_MAGIC = b"CD001"


def is_iso_image(path: Path) -> bool:
    """Whether ``path`` is a regular file (not a link to one) holding an ISO 9660 volume
    descriptor; never opens anything else (a device, a FIFO, a socket)."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped since the lstat
            return False
        return os.pread(fd, 6, _DESCRIPTOR_AT)[1:6] == _ISO_MAGIC
    except OSError:
        return False
    finally:
        os.close(fd)


@dataclass(frozen=True)
class IsoCheck:
    """What ``check_iso_image`` found: ``is_iso`` True, False (``why`` says what the file
    is instead), or None when the file could not be read here (``why`` says why)."""

    is_iso: bool | None
    why: str = ""


def _kind(mode: int) -> str:
    return ("a folder" if stat.S_ISDIR(mode) else "a device node"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket"
            if stat.S_ISSOCK(mode) else "a FIFO" if stat.S_ISFIFO(mode)
            else "not a regular file")


def check_iso_image(path: Path) -> IsoCheck:
    """Whether ``path`` (links followed: an ISO reached through a link will do) is a
    regular file holding an ISO 9660 volume descriptor, for a CD-ROM. Opens nothing but
    a regular file (never a device, a FIFO or a socket); a file this process cannot read
    (QEMU may) is ``is_iso`` None, not a refusal."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        return IsoCheck(None, f"cannot look at it: {err.strerror or err}")
    if not stat.S_ISREG(mode):
        return IsoCheck(False, f"it is {_kind(mode)}")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as err:
        return IsoCheck(None, f"cannot read it: {err.strerror or err}")
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped since the stat
            return IsoCheck(False, "it is not a regular file")
        if os.pread(fd, 6, _DESCRIPTOR_AT)[1:6] != _ISO_MAGIC:
            return IsoCheck(False, "it has no ISO 9660 volume descriptor at sector 16")
        return IsoCheck(True)
    except OSError as err:
        return IsoCheck(None, f"cannot read it: {err.strerror or err}")
    finally:
        os.close(fd)


def _check_replaceable(target: Path) -> None:
    """``--force`` replaces only an ISO image: never a device node, a socket, a FIFO, a
    link, or a file of another kind (another VM's disk)."""
    mode = os.lstat(target).st_mode
    if not stat.S_ISREG(mode):
        kind = ("a symbolic link" if stat.S_ISLNK(mode) else "a device node"
                if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket"
                if stat.S_ISSOCK(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                else "not a regular file")
        raise errors.InvalidInput(
            f"cannot replace {target}: it is {kind}, not an ISO image; --force replaces "
            "only an existing ISO file: choose another --out")
    if not is_iso_image(target):
        raise errors.InvalidInput(
            f"cannot replace {target}: it is not an ISO image (no ISO 9660 volume "
            "descriptor), and --force replaces only an ISO file: choose another --out, "
            "or move the file away if it is really to go")


def _check_out(out: Path, force: bool, roots: tuple[Path, ...]) -> Path:
    target = Path(os.path.abspath(out))
    if target.is_dir():
        raise errors.InvalidInput(f"{target} is a folder: --out names the ISO file to write")
    if not target.name.lower().endswith(".iso"):
        raise errors.InvalidInput(f"{target} does not end in .iso: name the ISO file to "
                                  "write (e.g. /var/lib/libvirt/images/virtio-win.iso)")
    if not target.parent.is_dir():
        raise errors.InvalidInput(f"cannot write {target}: there is no folder "
                                  f"{target.parent}")
    if target.exists() or target.is_symlink():
        if not force:
            raise errors.AlreadyExists(f"{target} exists; pass --force to replace it, or "
                                       "choose another --out")
        _check_replaceable(target)
    real = target.parent.resolve() / target.name
    for root in roots:
        if real.is_relative_to(root.resolve()):
            raise errors.InvalidInput(f"cannot write {target} inside the driver tree "
                                      f"{root}: it would end up on the ISO; write it elsewhere")
    return target


def build_iso(drivers: str | Path, out: str | Path, *, force: bool = False,
              label: str = DEFAULT_LABEL) -> IsoReport:
    """Write the driver tree at ``drivers`` as the ISO ``out``; see the module's text."""
    import pycdlib  # ~80 ms to import: only when an ISO is written
    from pycdlib.pycdlibexception import PyCdlibException

    volume = check_label(label)
    check_path(os.fspath(drivers), "the driver tree")
    check_path(os.fspath(out), "the ISO to write")
    tree = scan_drivers(drivers)
    target = _check_out(Path(out), force, tree.roots)
    iso = pycdlib.PyCdlib()
    namer = _Namer()
    try:
        iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=volume,
                app_ident_str="virtlife")
        for parts in tree.directories:
            n = namer.names(parts, is_dir=True)
            iso.add_directory(n.iso, rr_name=n.rr, joliet_path=n.joliet, file_mode=DIR_MODE)
        for f in tree.files:
            n = namer.names(f.parts, is_dir=False)
            iso.add_file(str(f.source), iso_path=n.iso, rr_name=n.rr, joliet_path=n.joliet,
                         file_mode=FILE_MODE)
    except PyCdlibException as err:
        raise errors.InvalidInput(f"cannot lay out the ISO for {tree.source}: {err}") from err
    size = _write(iso, target, force, PyCdlibException)
    return IsoReport(target, volume, tree.layout, len(tree.files), len(tree.directories),
                     size, (*tree.warnings, *namer.renamed))


def _write(iso: PyCdlib, target: Path, force: bool, lib_error: type[Exception]) -> int:
    """Master ``iso`` into a temporary file beside ``target``, then move it into place."""
    try:
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                        suffix=".part")
    except OSError as err:
        raise errors.InvalidInput(f"cannot write in {target.parent}: {err.strerror}") from err
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fp:
            iso.write_fp(fp)
            fp.flush()
            os.fsync(fp.fileno())
        os.chmod(tmp, 0o644)
        _move(tmp, target, force)
    except (OSError, lib_error) as err:
        tmp.unlink(missing_ok=True)
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise errors.OperationFailed(f"cannot write {target}: {why}") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        iso.close()
    return target.stat().st_size


def _move(tmp: Path, target: Path, force: bool) -> None:
    if force:
        if target.exists() or target.is_symlink():
            _check_replaceable(target)  # again: it may have changed while the ISO was made
        os.replace(tmp, target)
    else:
        try:  # a link never replaces a file that appeared while the ISO was written
            os.link(tmp, target)
        except FileExistsError:
            raise errors.AlreadyExists(
                f"{target} appeared while the ISO was written; it was left as it is "
                "(pass --force to replace it)") from None
        except OSError:  # a file system without hard links
            if target.exists():
                raise errors.AlreadyExists(f"{target} exists; pass --force to replace "
                                           "it") from None
            os.replace(tmp, target)
            return
        tmp.unlink()
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
