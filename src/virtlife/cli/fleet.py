"""Fleet commands: ``list``, ``host add/list/remove`` (and ``host maintenance/activate``,
``cli.maintenance``), ``events`` and ``history``.

The services are imported inside the commands, so that ``--help`` never loads libvirt.
``list``'s common forms usually run without click at all (``cli.quick``); this command
prints through the same ``quick.show_listing``.
"""

from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING

import click

from virtlife import errors
from virtlife.cli.app import App, emit_json, json_option, pass_app, show_table, warn
from virtlife.cli.maintenance import host_activate, host_maintenance
from virtlife.cli.params import COUNT, SECONDS

if TYPE_CHECKING:
    from virtlife.services.context import Services
    from virtlife.services.events import DomainEvent
    from virtlife.services.fleet import HostRef
    from virtlife.store.inventory import HostRecord


@click.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include VMs that are not running.")
@click.option("--host", default=None, metavar="HOST", help="Only this host.")
@json_option
@pass_app
def list_vms(app: App, show_all: bool, host: str | None, as_json: bool) -> None:
    """List the VMs of every host (hosts are asked at once).

    An unreachable host is reported and does not hide the others. Exits 4 (host
    unreachable) when no host answered, 0 when at least one did.

    Example: virtlife list --all
    """
    from virtlife.cli.quick import listing_answer, show_listing

    answer = listing_answer(app.services.fleet.list_vms(include_inactive=show_all, host=host))
    show_listing(answer["vms"], answer["unreachable"], answer["answered"], as_json)


@click.group()
def host() -> None:
    """Manage the host inventory."""


@host.command("add")
@click.argument("name")
@click.argument("uri")
@click.option("--allow-any-uri", is_flag=True,
              help="Accept a URI that virtlife refuses otherwise (another transport, "
                   "a program, socket or file in its parameters): only one you trust.")
@pass_app
def host_add(app: App, name: str, uri: str, allow_any_uri: bool) -> None:
    """Add a libvirt host under NAME (it is checked, and added even when down).

    URI is qemu:///system, or qemu+ssh://, qemu+tls:// or qemu+tcp://HOST/system with
    no parameters but no_verify, no_tty and mode, unless --allow-any-uri is given.

    Example: virtlife host add hv2 qemu+tcp://10.0.0.2/system
    """
    from virtlife.services.hosts import add_host

    services = app.services
    added = add_host(services.need_store(), name, uri, any_uri=allow_any_uri,
                     connect_timeout_s=services.fleet.connect_timeout_s)
    click.echo(f"added host {added.record.name} ({added.record.uri})")
    if added.info is not None:
        i = added.info
        click.echo(f"  reachable: {i.hostname}, libvirt {i.libvirt_version}, "
                   f"{i.hypervisor} {i.hypervisor_version}")
        if added.facts is not None:
            f = added.facts
            kvm = {True: "works", False: f"does not work ({f.kvm_note})",
                   None: "not offered"}[f.kvm]
            click.echo(f"  virt types: {', '.join(f.virt_types) or 'none'}; KVM {kvm}")
    else:
        warn(f"host {name} is not reachable now: {added.problem}")
    if added.dropped_local is not None:
        warn(added.dropped_local)


@host.command("list")
@click.option("--window", "window_s", type=SECONDS, default=1.0, show_default=True,
              help="Seconds over which each host's CPU load is sampled.")
@json_option
@pass_app
def host_list(app: App, window_s: float, as_json: bool) -> None:
    """List the hosts (the implicit local host while none is configured; with -c, that
    host), each one's mode (active, or maintenance: it takes no VM) and its load:
    memory committed against total, and CPU busy over a short window.

    A load that cannot be read is shown as "?" with the reason, never as zero.

    Example: virtlife host list
    """
    from virtlife.services.load import sample_loads

    services = app.services
    records: list[HostRecord | HostRef] = (
        [services.fleet.refs[n] for n in sorted(services.fleet.refs)]
        if services.connect_uri else list(services.need_store().hosts.effective()))
    loads, problems = sample_loads(services.fleet, [r.name for r in records],
                                   window_s=window_s)
    why = {p.host: p.message for p in problems}
    modes = _modes(services)
    if as_json:
        emit_json([{"name": r.name, "uri": r.uri, "mode": modes.get(r.name, "active"),
                    **({"load": loads[r.name].as_dict()} if r.name in loads
                       else {"load": None, "error": why.get(r.name, "no answer")})}
                   for r in records])
        return
    rows = []
    for r in records:
        load, mode = loads.get(r.name), modes.get(r.name, "active")
        if load is None:
            rows.append((r.name, r.uri, mode, "?", "?", why.get(r.name, "no answer")))
            continue
        cpu = "?" if load.cpu_pct is None else f"{load.cpu_pct:.1f}%"
        rows.append((r.name, r.uri, mode, f"{load.memory_pct:.1f}%", cpu, load.cpu_why))
    show_table(["NAME", "URI", "MODE", "MEMORY", "CPU", "NOTE"], rows, fit="NOTE")


def _modes(services: Services) -> dict[str, str]:
    """Each inventory host's mode (with -c too: the store may know the host)."""
    if services.store is None:
        return {}
    try:
        return {h.name: h.mode for h in services.store.hosts.list()}
    except errors.StoreUnavailable:
        return {}


@host.command("remove")
@click.argument("name")
@pass_app
def host_remove(app: App, name: str) -> None:
    """Remove a host from the inventory (its VMs are not touched).

    Example: virtlife host remove hv2
    """
    from virtlife.services.hosts import remove_host

    record = remove_host(app.services.need_store(), name)
    click.echo(f"removed host {record.name} ({record.uri})")


@click.command()
@click.option("--host", "hosts", multiple=True, metavar="HOST", help="Only these hosts.")
@click.option("--count", type=COUNT, default=None, help="Stop after this many VM events.")
@click.option("--timeout", "timeout_s", type=SECONDS, default=None,
              help="Stop after this many seconds.")
@json_option
@pass_app
def events(app: App, hosts: tuple[str, ...], count: int | None, timeout_s: float | None,
           as_json: bool) -> None:
    """Stream lifecycle and guest-agent events from all hosts (Ctrl-C stops).

    Reconnects when a host's libvirtd restarts; without --host, a host added to the
    inventory meanwhile is followed too.

    Example: virtlife events --json --count 5
    """
    from virtlife.services.events import EventKind, stream_events

    fleet = app.services.fleet
    stop = threading.Event()
    seen = 0
    lock = threading.Lock()

    def on_event(event: DomainEvent) -> None:
        nonlocal seen
        with lock:
            if stop.is_set():
                return
            if as_json:
                click.echo(json.dumps(event.as_dict()))
            else:
                click.echo(f"{event.at:%H:%M:%S.%f}"[:-3] + f"  {event}")
            if event.kind is not EventKind.HOST:
                seen += 1
                if count is not None and seen >= count:
                    stop.set()

    stream_events(fleet, on_event, stop, hosts=hosts or None)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        while not stop.is_set():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            stop.wait(0.5 if remaining is None else min(0.5, remaining))
    except KeyboardInterrupt:
        pass
    stop.set()


@click.command()
@click.argument("vm", required=False)
@click.option("--host", default=None, metavar="HOST", help="Only this host.")
@click.option("--limit", type=COUNT, default=50, show_default=True)
@json_option
@pass_app
def history(app: App, vm: str | None, host: str | None, limit: int, as_json: bool) -> None:
    """Show the journal of operations, newest first.

    A VM's history follows its UUID, so it survives migrations and renames, and a new
    VM under an old name starts afresh. A long detail is cut to the width (the
    terminal's, or COLUMNS, or 240 columns in a pipe); --json and `virtlife operation
    ID` show it whole.

    Example: virtlife history web1
    """
    app.services.settle_migrations()  # a move whose end was not seen: asked again now
    entries = app.services.lifecycle.history(vm, host=host, limit=limit)
    if as_json:
        emit_json([{
            "op_id": e.op_id, "time": e.started_at.isoformat(), "host": e.host, "vm": e.vm,
            "uuid": e.uuid, "operation": e.operation, "outcome": e.outcome,
            "duration_s": round(e.duration_s, 3), "detail": e.detail,
            "user": e.actor.user, "process": e.actor.process,
        } for e in entries])
        return
    show_table(
        ["TIME", "ID", "HOST", "VM", "OPERATION", "OUTCOME", "SECONDS", "BY", "DETAIL"],
        [(f"{e.started_at:%Y-%m-%d %H:%M:%S}", e.op_id, e.host, e.vm, e.operation,
          e.outcome, f"{e.duration_s:.2f}", e.actor.user or "-", e.detail) for e in entries],
        fit="DETAIL")  # the whole detail: --json, or `virtlife operation ID`


host.add_command(host_maintenance)
host.add_command(host_activate)

COMMANDS = [list_vms, host, events, history]
