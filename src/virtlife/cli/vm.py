"""Lifecycle commands: one click command per operation, each a call into ``Lifecycle``.

Input is checked before any host or the store is touched: option values by the types
of ``cli.params``, a domain XML file by its size and encoding (``xml.domain``). The
services are imported inside the commands (``--help`` never loads libvirt); ``state``'s
common forms usually run without click (``cli.quick``), printing as this one does.
"""

from __future__ import annotations

from pathlib import Path

import click

from virtlife.cli.app import (
    App,
    emit_json,
    host_option,
    json_option,
    no_wait_option,
    pass_app,
    show_result,
    show_table,
    sync_time_option,
    wait_agent_option,
)
from virtlife.cli.params import (
    MEMORY_MIB,
    NEW_VM_NAME,
    VCPUS,
    CheckedPath,
    FilePath,
    timeout_option,
)
from virtlife.cli.virsh import HintedChoice
from virtlife.errors import InvalidInput
from virtlife.states import PMTarget, ShutdownMode
from virtlife.xml.domain import MAX_XML_BYTES, DomainSpec, NicSpec, decode_xml

VM = click.argument("vm", metavar="VM")


def virsh_mode(value: str) -> str | None:
    """What to type instead of a virsh ``shutdown``/``reboot --mode`` virtlife lacks."""
    either = ("ask a QEMU guest by its agent (--mode agent) or its ACPI button "
              "(--mode acpi), or leave --mode out (auto: the agent, then the button)")
    if "," in value:
        return f"{value!r}: give one mode; {either}"
    if value in ("initctl", "signal"):
        return f"virsh's --mode {value} is for LXC containers: {either}"
    if value == "paravirt":
        return f"virsh's --mode paravirt is for Xen guests: {either}"
    return None


MODES = HintedChoice([m.value for m in ShutdownMode], virsh_mode)
ignore_unreachable_option = click.option(
    "--ignore-unreachable", is_flag=True,
    help="Go ahead although a host where this VM was last seen cannot be asked whether "
         "it runs there (you know it does not).")
force_option = click.option(
    "--force", is_flag=True,
    help="If every step is ignored, end it by force (destroy; reset for reboot).")


def read_xml_file(path: Path) -> str:
    """The text of a domain XML file, read no further than ``MAX_XML_BYTES`` (+1 to tell)."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_XML_BYTES + 1)
    except OSError as err:
        raise InvalidInput(f"cannot read {path}: {err.strerror or err}") from err
    return decode_xml(data, str(path))


@click.command()
@click.argument("xml_file", type=FilePath(exists=True))
@host_option
@ignore_unreachable_option
@json_option
@pass_app
def define(app: App, xml_file: Path, host: str | None, ignore_unreachable: bool,
           as_json: bool) -> None:
    """Define a VM from a domain XML file (or update an existing VM's definition).

    A malformed or rejected XML changes nothing; a UUID active on another host is
    refused.

    Example: virtlife define web1.xml
    """
    xml = read_xml_file(xml_file)
    s = app.services
    show_result(s.lifecycle.define(xml, host=host or s.default_host(),
                                   ignore_unreachable=ignore_unreachable, **app.call),
                as_json)


@click.command()
@click.argument("name", type=NEW_VM_NAME)
@click.option("--memory", "memory_mib", type=MEMORY_MIB, default=256, show_default=True,
              help="Memory in MiB.")
@click.option("--vcpus", type=VCPUS, default=1, show_default=True)
@click.option("--kernel", type=CheckedPath(), help="Kernel for direct boot.")
@click.option("--initrd", type=CheckedPath(), help="Initrd for direct boot.")
@click.option("--cmdline", default="", help="Kernel command line.")
@click.option("--disk", "disks", multiple=True, type=CheckedPath(),
              help="Disk image (repeatable; .qcow2 or raw). The first one is vda.")
@click.option("--network", "networks", multiple=True, help="NIC on a libvirt network.")
@click.option("--bridge", "bridges", multiple=True, help="NIC on a host bridge.")
@click.option("--user-nic", is_flag=True, help="NIC with QEMU user-mode networking.")
@click.option("--no-agent", is_flag=True, help="Leave out the guest-agent channel.")
@click.option("--no-vnc", is_flag=True, help="Leave out VNC graphics.")
@click.option("--virt-type", type=click.Choice(["kvm", "qemu", "test"]), default=None,
              help="Domain type (default: kvm where KVM really works, else qemu).")
@click.option("--start", is_flag=True, help="Start the VM once it is defined.")
@wait_agent_option
@host_option
@json_option
@pass_app
def create(app: App, name: str, memory_mib: int, vcpus: int, kernel: Path | None,
           initrd: Path | None, cmdline: str, disks: tuple[Path, ...],
           networks: tuple[str, ...], bridges: tuple[str, ...], user_nic: bool,
           no_agent: bool, no_vnc: bool, virt_type: str | None, start: bool,
           wait_agent: bool, host: str | None, as_json: bool) -> None:
    """Define a new VM from a small spec (agent channel and VNC on by default).

    Example: virtlife create web1 --memory 512 --disk /var/lib/libvirt/images/web1.qcow2
    --network default --start
    """
    nics = tuple(NicSpec("network", n) for n in networks) + tuple(
        NicSpec("bridge", b) for b in bridges) + ((NicSpec("user"),) if user_nic else ())
    spec = DomainSpec(
        name=name, memory_mib=memory_mib, vcpus=vcpus,
        kernel=kernel.resolve() if kernel else None,
        initrd=initrd.resolve() if initrd else None, cmdline=cmdline,
        disks=tuple(d.resolve() for d in disks), nics=nics, agent=not no_agent,
        vnc=not no_vnc,
    )
    from virtlife.services import provision

    s = app.services
    show_result(provision.create(s.lifecycle, spec, host=host or s.default_host(),
                                 facts=s.facts,
                                 virt_type=virt_type, start=start, wait_agent=wait_agent,
                                 **app.call),
                as_json)


@click.command()
@VM
@click.option("--paused", is_flag=True, help="Start with the vCPUs paused.")
@click.option("--force-boot", is_flag=True, help="Boot fresh, discarding a managed save.")
@click.option("--discard-saved", is_flag=True,
              help="Boot fresh although the VM was saved to a file, and mark that image "
                   "stale (it can never be restored).")
@ignore_unreachable_option
@wait_agent_option
@no_wait_option
@sync_time_option
@timeout_option
@json_option
@pass_app
def start(app: App, vm: str, paused: bool, force_boot: bool, discard_saved: bool,
          ignore_unreachable: bool, wait_agent: bool, no_wait: bool, sync_time: bool | None,
          timeout_s: float | None, as_json: bool) -> None:
    """Start a shut-off VM (from its managed save when it has one, then the guest
    clock is set right). Refused while the VM was saved to a file it has not been
    restored from, and while the same VM is active on another host.

    Example: virtlife start web1 --wait-agent
    """
    show_result(app.services.lifecycle.start(
        vm, paused=paused, force_boot=force_boot, wait=not no_wait, wait_agent=wait_agent,
        timeout_s=timeout_s, sync_time=sync_time, discard_saved=discard_saved,
        ignore_unreachable=ignore_unreachable, **app.call), as_json)


@click.command()
@VM
@click.option("--mode", type=MODES, default="auto", show_default=True,
              help="auto: the agent, then the ACPI button twice; agent or acpi: that way "
                   "only; default: one request in libvirt's way.")
@force_option
@no_wait_option
@timeout_option
@json_option
@pass_app
def shutdown(app: App, vm: str, mode: str, force: bool, no_wait: bool,
             timeout_s: float | None, as_json: bool) -> None:
    """Ask the guest to power off and wait until it is shut off.

    Each step of the ladder has its own time bound within --timeout (120 s by
    default); the output and the journal say which step worked and why the earlier
    ones did not. A guest that ignores every step ends in a timeout error (exit 5),
    left as it is, unless --force destroys it.

    Example: virtlife shutdown web1 --timeout 60 --force
    """
    show_result(app.services.lifecycle.shutdown(vm, mode=mode, wait=not no_wait, force=force,
                                                timeout_s=timeout_s, **app.call), as_json)


@click.command()
@VM
@click.option("--mode", type=MODES, default="auto", show_default=True,
              help="auto: the agent, then the ACPI button twice; agent or acpi: that way "
                   "only; default: one request in libvirt's way.")
@force_option
@wait_agent_option
@timeout_option
@json_option
@pass_app
def reboot(app: App, vm: str, mode: str, force: bool, wait_agent: bool,
           timeout_s: float | None, as_json: bool) -> None:
    """Ask the guest to reboot, and wait until it resets.

    The same ladder as shutdown; --force ends it with a hard reset.

    Example: virtlife reboot web1 --wait-agent
    """
    show_result(app.services.lifecycle.reboot(vm, mode=mode, wait_agent=wait_agent,
                                              force=force, timeout_s=timeout_s, **app.call),
                as_json)


@click.command()
@VM
@wait_agent_option
@timeout_option
@json_option
@pass_app
def reset(app: App, vm: str, wait_agent: bool, timeout_s: float | None,
          as_json: bool) -> None:
    """Hard-reset the VM (like pressing the reset button).

    Example: virtlife reset web1
    """
    show_result(app.services.lifecycle.reset(vm, wait_agent=wait_agent, timeout_s=timeout_s,
                                             **app.call),
                as_json)


@click.command()
@VM
@click.option("--graceful", is_flag=True, help="Send SIGTERM only, never SIGKILL.")
@no_wait_option
@timeout_option
@json_option
@pass_app
def destroy(app: App, vm: str, graceful: bool, no_wait: bool, timeout_s: float | None,
            as_json: bool) -> None:
    """Stop the VM at once (pull the plug).

    Example: virtlife destroy web1
    """
    show_result(app.services.lifecycle.destroy(vm, graceful=graceful, wait=not no_wait,
                                               timeout_s=timeout_s, **app.call), as_json)


@click.command()
@VM
@timeout_option
@json_option
@pass_app
def suspend(app: App, vm: str, timeout_s: float | None, as_json: bool) -> None:
    """Pause the VM's vCPUs (RAM stays in the host).

    Example: virtlife suspend web1
    """
    show_result(app.services.lifecycle.suspend(vm, timeout_s=timeout_s, **app.call), as_json)


@click.command()
@VM
@ignore_unreachable_option
@sync_time_option
@timeout_option
@json_option
@pass_app
def resume(app: App, vm: str, ignore_unreachable: bool, sync_time: bool | None,
           timeout_s: float | None, as_json: bool) -> None:
    """Resume a paused VM, then set its clock right through the agent.

    Example: virtlife resume web1
    """
    show_result(app.services.lifecycle.resume(vm, timeout_s=timeout_s, sync_time=sync_time,
                                              ignore_unreachable=ignore_unreachable,
                                              **app.call), as_json)


@click.command()
@VM
@click.argument("file", type=FilePath())
@timeout_option
@json_option
@pass_app
def save(app: App, vm: str, file: Path, timeout_s: float | None, as_json: bool) -> None:
    """Save the VM's RAM to FILE and stop it.

    Example: virtlife save web1 /var/lib/libvirt/save/web1.sav
    """
    show_result(app.services.lifecycle.save(vm, file, timeout_s=timeout_s, **app.call), as_json)


@click.command()
@click.argument("file", type=FilePath())
@click.option("--paused", is_flag=True, help="Leave the restored VM paused.")
@wait_agent_option
@sync_time_option
@host_option
@ignore_unreachable_option
@timeout_option
@json_option
@pass_app
def restore(app: App, file: Path, paused: bool, wait_agent: bool, sync_time: bool | None,
            host: str | None, ignore_unreachable: bool, timeout_s: float | None,
            as_json: bool) -> None:
    """Restore a VM from a save FILE, then set its clock right. A failed restore keeps
    the file; a stale image (the VM ran since the save) is refused.

    Example: virtlife restore /var/lib/libvirt/save/web1.sav
    """
    s = app.services
    show_result(s.lifecycle.restore(file, host=host or s.default_host(), paused=paused,
                                    wait_agent=wait_agent, timeout_s=timeout_s,
                                    sync_time=sync_time, ignore_unreachable=ignore_unreachable,
                                    **app.call),
                as_json)


@click.command()
@VM
@timeout_option
@json_option
@pass_app
def managedsave(app: App, vm: str, timeout_s: float | None, as_json: bool) -> None:
    """Save the VM's RAM to libvirt's managed image; the next start restores it.

    Example: virtlife managedsave web1
    """
    show_result(app.services.lifecycle.managedsave(vm, timeout_s=timeout_s, **app.call), as_json)


@click.command("managedsave-remove")
@VM
@json_option
@pass_app
def managedsave_remove(app: App, vm: str, as_json: bool) -> None:
    """Delete the VM's managed-save image (the next start boots fresh).

    Example: virtlife managedsave-remove web1
    """
    show_result(app.services.lifecycle.managedsave_remove(vm, **app.call), as_json)


@click.command()
@VM
@click.option("--target", type=click.Choice([t.value for t in PMTarget]), default="mem",
              show_default=True, help="Suspend to RAM, to disk, or both.")
@timeout_option
@json_option
@pass_app
def pmsuspend(app: App, vm: str, target: str, timeout_s: float | None, as_json: bool) -> None:
    """Ask the guest (through its agent) to suspend itself.

    Example: virtlife pmsuspend web1 --target mem
    """
    show_result(app.services.lifecycle.pmsuspend(vm, target=target, timeout_s=timeout_s,
                                                 **app.call),
                as_json)


@click.command()
@VM
@wait_agent_option
@sync_time_option
@timeout_option
@json_option
@pass_app
def pmwakeup(app: App, vm: str, wait_agent: bool, sync_time: bool | None,
             timeout_s: float | None, as_json: bool) -> None:
    """Wake a pmsuspended guest, then set its clock right.

    Example: virtlife pmwakeup web1
    """
    show_result(app.services.lifecycle.pmwakeup(vm, wait_agent=wait_agent,
                                                timeout_s=timeout_s, sync_time=sync_time,
                                                **app.call), as_json)


@click.command()
@VM
@click.option("--managed-save", is_flag=True, help="Also delete the managed-save image.")
@click.option("--snapshots-metadata", is_flag=True,
              help="Also drop its snapshots' metadata (overlay files and internal "
                   "snapshots stay in the files; the result names the files left).")
@click.option("--nvram/--keep-nvram", default=None,
              help="Delete or keep the UEFI NVRAM file (default: libvirt's rule).")
@json_option
@pass_app
def undefine(app: App, vm: str, managed_save: bool, snapshots_metadata: bool,
             nvram: bool | None, as_json: bool) -> None:
    """Remove a shut-off VM's definition (its disks stay).

    Example: virtlife undefine web1 --managed-save
    """
    show_result(app.services.lifecycle.undefine(
        vm, managed_save=managed_save, snapshots=snapshots_metadata, nvram=nvram, **app.call),
        as_json)


@click.command()
@VM
@click.option("--inactive", is_flag=True, help="The persistent definition, not the live one.")
@pass_app
def dumpxml(app: App, vm: str, inactive: bool) -> None:
    """Print the VM's domain XML.

    Example: virtlife dumpxml web1 > web1.xml
    """
    click.echo(app.services.lifecycle.dumpxml(vm, inactive=inactive), nl=False)


@click.command()
@VM
@json_option
@pass_app
def state(app: App, vm: str, as_json: bool) -> None:
    """Print the VM's state and libvirt's reason, e.g. "paused (user)".

    Example: virtlife state web1
    """
    from virtlife.cli.quick import show_state

    host, current = app.services.lifecycle.state(vm)
    show_state(vm, host, current.state.value, current.state.label, current.reason, as_json)


@click.command()
@VM
@json_option
@pass_app
def info(app: App, vm: str, as_json: bool) -> None:
    """Print what libvirt knows about the VM.

    Example: virtlife info web1 --json
    """
    details = app.services.lifecycle.info(vm)
    if as_json:
        emit_json(details.as_dict())
        return
    data = details.as_dict()
    data["state"] = str(details.state)
    data.pop("reason")
    show_table(["field", "value"], [(k, "-" if v is None else v) for k, v in data.items()])


COMMANDS = [define, create, start, shutdown, reboot, reset, destroy, suspend, resume, save,
            restore, managedsave, managedsave_remove, pmsuspend, pmwakeup, undefine, dumpxml,
            state, info]
