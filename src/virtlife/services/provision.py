"""Create a VM from a small spec: check everything, then copy its disks, build XML, define.

Policy lives here, not in the XML builder: the virt type (``kvm`` only where KVM
really works, ``qemu`` otherwise, ``test`` on libvirt's test driver), the CPU model
that goes with it, the refusal of an invalid name or of a name already in use on the
target host. Nothing is written before every check has passed: the spec's disk copies
are made only then, each created exclusively (never over an existing file, which a VM
may be using), and removed again when the define fails. A start that fails after the
define leaves the VM defined, and its error says so and what to type next.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from dataclasses import replace
from pathlib import Path
from typing import Unpack

from virtlife import errors
from virtlife.hypervisor import Host
from virtlife.hypervisor.probe import identity
from virtlife.paths import check_path
from virtlife.services.facts import host_facts
from virtlife.services.lifecycle import Call, Lifecycle, OperationResult
from virtlife.states import UNDEFINED, Operation, VMState
from virtlife.store.facts import Facts
from virtlife.xml.domain import (
    DiskCopy,
    DomainSpec,
    build_domain_xml,
    check_xml_size,
    disk_files,
    validate_vm_name,
)

log = logging.getLogger(__name__)


def choose_virt_type(available: set[str], *, uri: str, kvm_works: bool | None,
                     requested: str | None = None) -> str:
    """Pick the domain type for a new VM.

    ``kvm_works`` is the host's own verdict (``services.facts``: a KVM guest started
    there, or did not); None means it was not asked, and KVM is then not assumed. An
    explicit ``requested`` type must be offered.
    """
    if requested is not None:
        if available and requested not in available:
            offered = ", ".join(sorted(available)) or "none"
            raise errors.InvalidDefinition(
                f"virt type {requested} is not offered by {uri} (it offers {offered})")
        return requested
    if uri.startswith("test:"):
        return "test"
    if "kvm" in available and kvm_works is True:
        return "kvm"
    if "qemu" in available:
        return "qemu"
    raise errors.Unsupported(f"{uri} offers no x86_64 virt type we can use ({available})")


def finish_spec(spec: DomainSpec, host: Host, requested_virt_type: str | None,
                facts: Facts | None = None) -> DomainSpec:
    """Fill in the virt type and the CPU model that goes with it, from the host's facts
    (recorded in ``facts`` when given; a KVM probe on the host when they are new)."""
    if requested_virt_type is None and not host.uri.startswith("test:"):
        known = host_facts(host, facts)
        available, kvm_works = set(known.virt_types), known.kvm
    else:
        available, kvm_works = identity(host)[1], None
    virt_type = choose_virt_type(available, uri=host.uri, kvm_works=kvm_works,
                                 requested=requested_virt_type)
    cpu_model = None if virt_type == "kvm" else spec.cpu_model
    return replace(spec, virt_type=virt_type, cpu_model=cpu_model)


# -- disk copies: made only after every check, never over a file -----------------------

def _readable_dir(directory: Path) -> None:
    """Create ``directory`` if needed and let the QEMU user traverse and read it."""
    directory.mkdir(parents=True, exist_ok=True)
    mode = stat.S_IMODE(directory.stat().st_mode)
    if mode & 0o055 != 0o055:
        try:
            os.chmod(directory, mode | 0o055)
        except PermissionError:  # not ours: libvirt says so at start if QEMU cannot read
            log.warning("cannot make %s readable by the QEMU user", directory)


def _copy_exclusive(vm: str, copy: DiskCopy) -> None:
    """Copy ``copy.source`` to a new file ``copy.target``; refuse if the target exists."""
    target = copy.target
    if target.parent.exists() and not target.parent.is_dir():
        raise errors.OperationFailed(
            f"cannot create {vm}: {target.parent}, where its disk goes, is not a directory")
    try:
        _readable_dir(target.parent)
    except OSError as err:
        raise errors.OperationFailed(
            f"cannot create {vm}: cannot use {target.parent} for its disk: "
            f"{err.strerror or err}") from err
    try:
        src = open(copy.source, "rb")  # closed below; opened before the target
    except OSError as err:
        raise errors.OperationFailed(
            f"cannot create {vm}: cannot read the disk to copy, {copy.source}: "
            f"{err.strerror or err}") from err
    with src:
        try:
            dst = open(target, "xb")  # O_EXCL: never over an existing file
        except FileExistsError as err:
            raise errors.AlreadyExists(
                f"cannot create {vm}: its disk {target} already exists and virtlife never "
                "writes over a file (a VM may be using it); remove it if nothing uses it, "
                "or choose another name") from err
        except OSError as err:
            raise errors.OperationFailed(
                f"cannot create {vm}: cannot create its disk {target}: "
                f"{err.strerror or err}") from err
        try:
            with dst:
                shutil.copyfileobj(src, dst, 1024 * 1024)
            os.chmod(target, 0o644)
        except BaseException as err:
            target.unlink(missing_ok=True)  # our own, half-written file
            if isinstance(err, OSError):
                raise errors.OperationFailed(
                    f"cannot create {vm}: copying {copy.source} to {target} failed: "
                    f"{err.strerror or err}") from err
            raise
    log.info("copied %s to %s for %s", copy.source, target, vm)


def _make_copies(vm: str, copies: tuple[DiskCopy, ...]) -> list[Path]:
    made: list[Path] = []
    try:
        for copy in copies:
            _copy_exclusive(vm, copy)
            made.append(copy.target)
    except BaseException:
        _unlink(made)
        raise
    return made


def _unlink(paths: list[Path]) -> None:
    for path in paths:
        try:
            path.unlink(missing_ok=True)
            log.info("removed %s", path)
        except OSError as err:
            log.warning("cannot remove %s: %s", path, err)


def _discard_unused(host: Host, vm: str, made: list[Path]) -> list[Path]:
    """Remove the copies ``made`` unless a VM ``vm`` now uses them; return those kept."""
    if not made:
        return []
    try:
        guest = host.find(vm)
        used = disk_files(guest.xml(inactive=True)) if guest is not None else set()
    except errors.VirtlifeError as err:  # cannot tell whether it uses them: keep them
        log.warning("keeping %s: cannot tell whether %s uses them: %s",
                    ", ".join(map(str, made)), vm, err)
        return made
    kept = [p for p in made if str(p) in used]
    _unlink([p for p in made if str(p) not in used])
    return kept


def _paths(spec: DomainSpec) -> list[tuple[str, Path]]:
    """Every file path ``spec`` names, with what it is."""
    named = [("the kernel", spec.kernel), ("the initrd", spec.initrd),
             ("the serial log", spec.serial_log)]
    named += [("a disk", d) for d in spec.disks]
    named += [("a disk's source", c.source) for c in spec.disk_copies]
    return [(what, path) for what, path in named if path is not None]


def create(lifecycle: Lifecycle, spec: DomainSpec, *, host: str,
           virt_type: str | None = None, start: bool = False,
           wait_agent: bool = False, facts: Facts | None = None,
           **call: Unpack[Call]) -> OperationResult:
    """Define a new VM from ``spec`` on ``host`` (and start it when asked).

    Checks first (the name, that it is free on ``host``, the virt type, the XML), then
    makes the spec's disk copies, then defines; a failed define removes the copies. A
    refusal before the define (bad name, name taken, disk file in the way) is journalled
    as the define's.
    """
    try:
        validate_vm_name(spec.name)
        for what, path in _paths(spec):
            check_path(os.fspath(path), what)
        h = lifecycle.fleet.host(host)
        if h.find(spec.name) is not None:
            raise errors.VMAlreadyExists(
                f"cannot create {spec.name}: a VM of that name already exists on host {host}")
        xml = build_domain_xml(finish_spec(spec, h, virt_type, facts))
        check_xml_size(xml, f"the domain XML of {spec.name}")
        made = _make_copies(spec.name, spec.disk_copies)  # every check passed: first write
    except errors.VirtlifeError as err:
        lifecycle.ops.record_failure(Operation.DEFINE, host, spec.name, err)
        raise
    try:
        result = lifecycle.define(xml, host=host, **call)
    except BaseException as err:
        kept = _discard_unused(h, spec.name, made)
        if kept and isinstance(err, errors.VirtlifeError):
            err.add_note(f"(kept {', '.join(map(str, kept))}: {spec.name} uses it)")
        raise
    if start:
        try:
            result = lifecycle.start(f"{host}/{spec.name}", wait_agent=wait_agent,
                                     progress=call.get("progress"), queue_s=call.get("queue_s"))
        except errors.VirtlifeError as err:
            _say_left_defined(lifecycle, h, host, spec.name, err)
            raise
    return result


def _say_left_defined(lifecycle: Lifecycle, h: Host, host: str, vm: str,
                      err: errors.VirtlifeError) -> None:
    """Reword ``err``, the start's failure after the define, to say that ``vm`` stays
    defined and what to type next (start again, or undefine). Its class, and so its exit
    code, stays the start's."""
    try:
        ref = vm if len(lifecycle.fleet.refs) == 1 else f"{host}/{vm}"
    except errors.VirtlifeError:  # the inventory cannot be read: name the host
        ref = f"{host}/{vm}"
    try:
        guest = h.find(vm)
        state = guest.status() if guest is not None else UNDEFINED
    except errors.VirtlifeError:  # cannot tell: it was defined, so say what that leaves
        state = None
    defined = f"{vm} was defined on host {host}"
    if state is not None and state.state is VMState.UNDEFINED:  # undefined by someone else
        then = f"{defined}, and is no longer defined there"
    elif state is not None and state.state.is_active:  # started, then failed (agent wait)
        then = (f"{defined} and stays defined; it is {state.state.label} now; "
                f"`virtlife destroy {ref}` then `virtlife undefine {ref}` removes it")
    else:
        then = (f"{defined} and stays defined{', not running' if state else ''}; "
                f"`virtlife start {ref}` tries the start again, `virtlife undefine {ref}` "
                "removes it")
    # the same error object (its class, exit code, cause and notes), its message extended
    err.args = (f"{err}; {then}",)
