"""Lab commands for the multi-host lab: ``lab up [N]``, ``lab down``, ``lab status``.

Thin over ``virtlife.lab.cluster`` (which builds and ends the hosts, and never touches
the inventory); the inventory rows ``lab-a``, ``lab-b``, ... are added and removed
here through the services (``services.hosts``), checked before the lab is built.
"""

from __future__ import annotations

from ipaddress import IPv4Network
from typing import TYPE_CHECKING

import click

from virtlife import errors
from virtlife.cli.app import App, emit_json, json_option, pass_app, show_table, warn

if TYPE_CHECKING:
    from virtlife.lab.cluster import LabStatus


def _say(message: str) -> None:
    click.echo(f"  {message}")


def _segment(_ctx: click.Context, _param: click.Parameter, value: str) -> IPv4Network:
    from virtlife.lab import labnet

    try:
        return labnet.plan(1, value).segment
    except errors.LabError as err:
        raise click.BadParameter(str(err)) from err


def _show(status: LabStatus) -> None:
    """A lab's status as a header line and a table of its hosts."""
    r = status.record
    owner = f", owner pid {r.owner.pid}" if r.owner is not None else ""
    click.echo(f"lab: {status.state}, {r.size} host(s) on {r.segment} (bridge {r.bridge} "
               f"{r.plan.bridge_address}), pool {r.pool_name} at {r.pool_dir}{owner}")
    show_table(["HOST", "ADDRESS", "URI", "HOST UUID", "HOLDER", "VIRTLOGD", "LIBVIRTD",
                "REACHABLE"],
               [(h.name, h.address, h.uri, h.host_uuid or "-",
                 *(h.pids.get(p, "-") for p in ("holder", "virtlogd", "libvirtd")),
                 "yes" if h.reachable else "no") for h in status.hosts])
    if status.reason:
        click.echo(f"  {status.reason}")


@click.command("up")
@click.argument("n", type=click.IntRange(1, 26), default=2, required=False, metavar="[N]")
@click.option("--segment", default="10.253.7.0/24", show_default=True, metavar="CIDR",
              callback=_segment, help="The lab network's private IPv4 segment.")
@click.option("--owner-pid", type=click.IntRange(min=1), default=None, metavar="PID",
              help="The lab counts as stale once process PID has ended (a test session "
                   "or CI job that owns it); the next `lab up` or `lab down` cleans it up.")
@json_option
@pass_app
def lab_up(app: App, n: int, segment: IPv4Network, owner_pid: int | None,
           as_json: bool) -> None:
    """Bring up N lab hosts (default 2) on this machine, for migrations.

    Each host (lab-a, lab-b, ...) has its own network namespace, at 10.253.7.11,
    .12, ... on the bridge vl-lab0 (the machine is 10.253.7.1), its own
    /etc/libvirt, /var/lib/libvirt, /run and logs, and its own virtlogd and
    libvirtd, which listens at qemu+tcp://ADDRESS/system without authentication
    (a lab only). The dir pool lab-shared is one directory for all of them
    ($VIRTLIFE_CACHE/lab-shared), as is the test guest. The hosts are added to the
    inventory. A lab already up is kept (same N) or refused (another N: `lab down`
    first); a lab whose processes died is cleaned up and brought up again.

    \b
    Example: virtlife lab up 2
    Then:    virsh -c qemu+tcp://10.253.7.11/system migrate --live --p2p --unsafe \\
               VM qemu+tcp://10.253.7.12/system
    """
    from virtlife.lab import cluster, labnet
    from virtlife.services.hosts import add_host, remove_host

    try:
        wanted = labnet.plan(n, segment)
    except errors.LabError as err:
        raise click.UsageError(str(err)) from err
    services = app.services
    store = services.need_store()
    changes = cluster.inventory_changes([(r.name, r.uri) for r in store.hosts.list()],
                                        wanted)
    if changes.conflicts:
        raise errors.LabError("cannot bring the lab up: " + "; ".join(changes.conflicts))
    result = cluster.up(n, segment=segment, owner_pid=owner_pid,
                        progress=None if as_json else _say)
    removed = [remove_host(store, name).name for name in changes.remove]
    added: list[str] = []
    for name, uri in changes.add:
        done = add_host(store, name, uri, connect_timeout_s=services.fleet.connect_timeout_s)
        added.append(name)
        if done.problem is not None:
            warn(f"lab host {name} was added to the inventory, but does not answer: "
                 f"{done.problem}")
        if done.dropped_local is not None:
            warn(done.dropped_local)
    if as_json:
        emit_json({**result.status.as_dict(), "already_up": result.already_up,
                   "actions": result.actions, "notes": result.notes,
                   "inventory": {"added": added, "removed": removed}})
        return
    _show(result.status)
    if added or removed:
        click.echo("  inventory: " + "; ".join(
            part for part in (f"added {', '.join(added)}" if added else "",
                              f"removed {', '.join(removed)} (an earlier lab's)"
                              if removed else "") if part))
    for note in result.notes:
        click.echo(f"  note: {note}")


@click.command("down")
@pass_app
def lab_down(app: App) -> None:
    """Take the lab (and the light lab) down, or clean up what a dead or killed lab left.

    Stops exactly the processes the lab started (its daemons and the VMs they run),
    deletes its network namespaces, veths and bridge, and removes its hosts from the
    inventory. The shared pool directory is removed when empty, and kept (and said)
    when it still holds files.

    Example: virtlife lab down
    """
    from virtlife.lab import cluster, labnet, light
    from virtlife.services.hosts import remove_host

    record, actions = cluster.down()
    light_record, light_actions = light.down()
    actions += light_actions
    segments = [labnet.SEGMENT, *([IPv4Network(record.segment)] if record else [])]
    light_segments = [light.SEGMENT, *([IPv4Network(light_record.segment)]
                                       if light_record else [])]
    removed: list[str] = []
    try:
        store = app.services.need_store()
        for r in store.hosts.list():
            if cluster.is_lab_row(r.name, r.uri, segments) or \
                    light.is_light_row(r.name, r.uri, light_segments):
                removed.append(remove_host(store, r.name).name)
    except errors.StoreUnavailable as err:
        warn(f"the lab is down, but its hosts could not be removed from the inventory: {err}")
    for action in actions:
        click.echo(f"  {action}")
    if removed:
        click.echo(f"  removed {', '.join(removed)} from the inventory")
    click.echo("lab down" if actions or removed else "no lab was up: nothing to do")


@click.command("status")
@json_option
def lab_status(as_json: bool) -> None:
    """Show the lab: each host's address, URI, host UUID, daemons, and whether it answers.

    The lab is up (every host runs and answers), broken (some host does not, and the
    lab's owner still runs), stale (the next `lab up` or `lab down` cleans it up), or
    down.

    Example: virtlife lab status --json
    """
    from virtlife.lab import cluster

    status = cluster.status()
    if as_json:
        emit_json(status.as_dict() if status is not None else {"state": "down", "hosts": []})
    elif status is None:
        click.echo("lab: down (virtlife lab up [N] brings one up)")
    else:
        _show(status)


COMMANDS = [lab_up, lab_down, lab_status]
