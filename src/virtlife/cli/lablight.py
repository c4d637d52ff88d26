"""``lab light-up N``: many cheap libvirt hosts for fleet-scale listings.

Thin over ``virtlife.lab.light`` (which builds and ends the hosts and never touches
the inventory); the inventory rows ``light-001``, ... are added here (straight into
the store: the lab has just checked that each host answers, so the per-host check of
``host add`` would only cost time). ``lab down`` takes the light lab down too.
"""

from __future__ import annotations

from ipaddress import IPv4Network

import click

from virtlife import errors
from virtlife.cli.app import App, emit_json, json_option, pass_app


@click.command("light-up")
@click.argument("n", type=click.IntRange(1, 500), default=20, required=False, metavar="[N]")
@click.option("--vms", type=click.IntRange(4, 1000), default=50, show_default=True,
              help="Domains defined on each host.")
@click.option("--running-hosts", type=click.IntRange(0, 20), default=2, show_default=True,
              help="Hosts that also run virtlogd and hold a running, a paused and two "
                   "managed-saved VM (QEMU, TCG); the others get the two save images.")
@click.option("--segment", default="10.252.0.0/22", show_default=True, metavar="CIDR",
              help="The light lab's private IPv4 segment.")
@click.option("--owner-pid", type=click.IntRange(min=1), default=None, metavar="PID",
              help="The light lab counts as stale once process PID has ended.")
@json_option
@pass_app
def lab_light_up(app: App, n: int, vms: int, running_hosts: int, segment: str,
                 owner_pid: int | None, as_json: bool) -> None:
    """Bring up N light hosts (default 20): a libvirtd each, QEMU driver only.

    Each host (light-001, light-002, ...) has its own network namespace at
    10.252.0.11, .12, ... on the bridge vl-lt0, its own libvirt trees, and a libvirtd
    listening at qemu+tcp://ADDRESS/system without authentication (a lab only), with
    --vms domains, mostly shut off. The hosts are added to the inventory;
    `virtlife lab down` takes them down and out of it.

    \b
    Example: virtlife lab light-up 100 && virtlife list --all
    """
    from virtlife.lab import light

    try:
        hosts = light.plan(n, segment, running_hosts)
    except errors.LabError as err:
        raise click.UsageError(str(err)) from err
    store = app.services.need_store()
    rows = {r.name: r.uri for r in store.hosts.list()}
    conflicts = [f"the inventory has a host {h.name} at {rows[h.name]}, not at {h.uri}"
                 for h in hosts if h.name in rows and rows[h.name] != h.uri]
    if conflicts:
        raise errors.LabError("cannot bring the light lab up: " + "; ".join(conflicts[:3])
                              + "; remove them (virtlife host remove NAME)")
    result = light.up(n, vms=vms, running_hosts=running_hosts, segment=segment,
                      owner_pid=owner_pid,
                      progress=None if as_json else (lambda m: click.echo(f"  {m}")))
    wanted = {h.name for h in hosts}
    for name, uri in rows.items():
        if name not in wanted and light.is_light_row(name, uri, [IPv4Network(segment)]):
            store.hosts.remove(name)
    for h in hosts:
        if h.name not in rows:
            store.hosts.add(h.name, h.uri)
    if as_json:
        emit_json({**(light.status() or {}), "seconds": round(result.seconds, 2),
                   "actions": result.actions})
        return
    click.echo(f"light lab: {n} hosts on {segment} ({hosts[0].name} .. {hosts[-1].name}), "
               f"{vms} VMs each, up in {result.seconds:.1f} s; in the inventory")


COMMANDS = [lab_light_up]
