"""Media commands: build the virtio-win driver ISO and attach or detach ISO CD-ROMs.

Thin click commands over ``services.isos`` (the ISO, written on this machine; it needs
no host or store) and ``services.media`` (CD-ROM operations, built here from the
services' fleet and operations). They only parse, call and print.
"""

from __future__ import annotations

from pathlib import Path

import click

from virtlife.cli.app import App, emit_json, json_option, pass_app, show_result, warn
from virtlife.cli.params import CheckedPath, FilePath, timeout_option
from virtlife.services.isos import DEFAULT_LABEL, build_iso

# services.media.CdromBus's values, without loading libvirt for --help (a unit test
# keeps the two equal)
BUSES = ("scsi", "sata", "ide")

@click.command("windows-drivers-iso")
@click.option("--drivers", type=CheckedPath(), required=True, metavar="DIR",
              help="The virtio-win driver tree: the RPM's /usr/share/virtio-win/drivers "
                   "(guest-agent/ beside it is taken too) or the virtio-win ISO's contents.")
@click.option("--out", type=FilePath(), required=True, metavar="FILE.iso",
              help="The ISO file to write.")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
@click.option("--label", default=DEFAULT_LABEL, show_default=True,
              help="The volume label (1-32 letters, digits, _ . -).")
@json_option
def windows_drivers_iso(drivers: Path, out: Path, force: bool, label: str,
                        as_json: bool) -> None:
    """Build the virtio-win driver ISO for Windows guests from a driver tree.

    Names stay as they are for Windows (Joliet) and Linux (Rock Ridge). Missing drivers
    (vioserial, viostor, NetKVM, qxl or qxldod, the qemu-ga*.msi installer) are
    warnings; the ISO is still written.

    \b
    Example: virtlife windows-drivers-iso --drivers /usr/share/virtio-win/drivers \\
               --out /var/lib/libvirt/images/virtio-win.iso
    """
    report = build_iso(drivers, out, force=force, label=label)
    if as_json:
        emit_json(report.as_dict())
    else:
        click.echo(str(report))
    for message in report.warnings:
        warn(message)


@click.command("attach-iso")
@click.argument("vm", metavar="VM")
@click.argument("iso", metavar="FILE.iso", type=FilePath())
@click.option("--bus", type=click.Choice(BUSES), default=None,
              help="The CD-ROM's bus [default: scsi]: scsi (virtio-scsi, hot-pluggable; the "
                   "guest needs its driver), sata or ide (read by Windows without drivers; "
                   "shut-off VMs only; ide on i440fx pc machines only).")
@click.option("--detach", is_flag=True,
              help="Remove the CD-ROM virtlife attached for FILE.iso instead (on any bus).")
@timeout_option
@json_option
@pass_app
def attach_iso(app: App, vm: str, iso: Path, bus: str | None, detach: bool,
               timeout_s: float | None, as_json: bool) -> None:
    """Attach an ISO file (a path on the VM's host) to a VM as a CD-ROM.

    A running VM gets it at once (and in its definition when it is persistent), a
    shut-off VM in its definition. It goes on the VM's virtio-scsi controller, which is
    added when the VM has none. Windows cannot read that before it has the vioscsi
    driver, which is on the virtio-win ISO: attach that one with --bus sata (or ide) to
    the shut-off VM. A SATA or IDE CD-ROM is detached with the VM shut off too.

    \b
    Example: virtlife attach-iso web1 /var/lib/libvirt/images/debian-12.iso
    Windows: virtlife attach-iso win1 /var/lib/libvirt/images/virtio-win.iso --bus sata
    and then: virtlife attach-iso win1 /var/lib/libvirt/images/virtio-win.iso --detach
    """
    if detach and bus is not None:
        raise click.UsageError("--bus is for attaching: --detach finds the CD-ROM on any bus")
    s = app.services
    from virtlife.services.media import CdromBus, Media

    media = Media(s.fleet, s.lifecycle.ops)
    if detach:
        result = media.detach_iso(vm, iso, timeout_s=timeout_s, **app.call)
    else:
        result = media.attach_iso(vm, iso, bus=bus or CdromBus.SCSI, timeout_s=timeout_s,
                                  **app.call)
    show_result(result, as_json)


COMMANDS = [windows_drivers_iso, attach_iso]
