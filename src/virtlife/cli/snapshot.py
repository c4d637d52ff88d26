"""``virtlife snapshot VM ...``: the snapshot commands, each a call into ``Snapshots``.

``snapshot VM create [NAME] | list | revert NAME | delete NAME``. ``create``,
``revert`` and ``delete`` print the operation's result (journalled like every
operation); ``list`` prints a table or ``--json``. They only parse, call and print:
what each kind of snapshot is and what libvirt can do with it is in
``services.snapshots``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from virtlife.cli.app import (
    App,
    emit_json,
    group_vm,
    json_option,
    pass_app,
    show_result,
    show_table,
    sync_time_option,
)
from virtlife.cli.params import SECONDS
from virtlife.cli.vm import ignore_unreachable_option

if TYPE_CHECKING:
    from virtlife.services.snapshots import SnapshotInfo


@click.group()
@click.argument("vm", metavar="VM")
def snapshot(vm: str) -> None:
    """Take, list, revert to and delete snapshots of VM.

    A plain snapshot of a running VM is internal: kept inside its qcow2 disk images,
    with the VM's memory, and revert brings the VM back running as it was then.
    --disk-only (and --quiesce) make an external snapshot: each disk gets an overlay
    file beside it (web1.qcow2 gets web1.NAME) that the VM writes to from then on.
    libvirt can delete an external snapshot (merging the overlay back) but cannot
    revert to one yet.
    `virtlife undefine VM --snapshots-metadata` drops the snapshots' metadata only:
    internal snapshots stay inside the images, and overlay files stay on the host (the
    newest overlay holds the VM's latest disk content, the older files its backing).

    Example: virtlife snapshot web1 create before-upgrade --quiesce
    """


@snapshot.command()
@click.argument("name", required=False, metavar="[NAME]")
@click.option("--quiesce", is_flag=True,
              help="Freeze the guest's file systems through its agent for the snapshot "
                   "(bounded by --freeze-bound, always thawed); implies --disk-only.")
@click.option("--no-quiesce-ok", is_flag=True,
              help="With --quiesce: if the guest cannot be frozen (no agent answers), take "
                   "the snapshot unquiesced and say why.")
@click.option("--disk-only", is_flag=True,
              help="An external snapshot of the disks only (overlay files beside them).")
@click.option("--memory", is_flag=True,
              help="Keep the VM's memory too (refused on a shut-off VM; the default for "
                   "a running VM unless --disk-only).")
@click.option("--freeze-bound", "freeze_bound_s", type=SECONDS, default=None,
              metavar="S",
              help="With --quiesce: thaw after S seconds whatever happens (default: the "
                   "settings' agent.freeze_bound_s, 10 s); a snapshot not taken by then "
                   "is deleted and the command fails.")
@click.option("--description", default="", metavar="TEXT", help="A description to keep.")
@json_option
@pass_app
def create(app: App, name: str | None, quiesce: bool, no_quiesce_ok: bool, disk_only: bool,
           memory: bool, freeze_bound_s: float | None, description: str,
           as_json: bool) -> None:
    """Take a snapshot of VM, named NAME (default: the time, snap-YYYYMMDD-HHMMSS).

    Example: virtlife snapshot web1 create before-upgrade --description "kernel 6.1"
    """
    show_result(app.services.snapshots.create(
        group_vm(), name, description=description, quiesce=quiesce, no_quiesce_ok=no_quiesce_ok,
        disk_only=disk_only, memory=memory, freeze_bound_s=freeze_bound_s, **app.call),
        as_json)


def _row(s: SnapshotInfo) -> tuple[str, ...]:
    created = s.created.strftime("%Y-%m-%d %H:%M:%S") if s.created else "-"
    kind = s.location + (" + memory" if s.memory else "")
    return (s.name, created, s.state, kind, s.parent or "-", "*" if s.current else "",
            s.description or "-")


@snapshot.command("list")
@json_option
@pass_app
def list_(app: App, as_json: bool) -> None:
    """List VM's snapshots, oldest first (times in UTC; * marks the current one).

    Example: virtlife snapshot web1 list --json
    """
    found = app.services.snapshots.list(group_vm())
    if as_json:
        emit_json([s.as_dict() for s in found])
    elif not found:
        click.echo(f"{group_vm()} has no snapshots")
    else:
        show_table(["name", "created", "state", "kind", "parent", "current", "description"],
                   [_row(s) for s in found])


@snapshot.command()
@click.argument("name")
@sync_time_option
@ignore_unreachable_option
@json_option
@pass_app
def revert(app: App, name: str, sync_time: bool | None, ignore_unreachable: bool,
           as_json: bool) -> None:
    """Bring VM back to snapshot NAME: it ends in the snapshot's state (running, paused
    or shut off), then its clock is set right when it runs. A revert that starts a
    stopped VM is refused while the same VM is active on another host, as start is.

    Example: virtlife snapshot web1 revert before-upgrade
    """
    show_result(app.services.snapshots.revert(group_vm(), name, sync_time=sync_time,
                                              ignore_unreachable=ignore_unreachable,
                                              **app.call), as_json)


@snapshot.command()
@click.argument("name")
@click.option("--children", is_flag=True,
              help="Delete its children and their children too (without it only NAME goes: "
                   "its children then hang from its parent).")
@click.option("--metadata-only", is_flag=True,
              help="Only make libvirt forget it: an internal snapshot stays inside the "
                   "images, an external one's overlay files stay on the host.")
@json_option
@pass_app
def delete(app: App, name: str, children: bool, metadata_only: bool, as_json: bool) -> None:
    """Delete snapshot NAME of VM (an external one's overlay is merged back first).

    Example: virtlife snapshot web1 delete before-upgrade --children
    """
    show_result(app.services.snapshots.delete(group_vm(), name, children=children,
                                              metadata_only=metadata_only, **app.call),
                as_json)


COMMANDS = [snapshot]
