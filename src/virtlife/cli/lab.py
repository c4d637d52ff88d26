"""Lab commands: prepare this host, build the test guest, create test-guest VMs."""

from __future__ import annotations

import click

from virtlife.cli.app import App, host_option, json_option, pass_app, show_result
from virtlife.services import provision


def _say(message: str) -> None:
    click.echo(f"  {message}")


@click.group()
def lab() -> None:
    """The test lab: host preparation and the tiny test guest."""


@lab.command("setup")
@click.option("--no-guest", is_flag=True, help="Do not build the test guest.")
def lab_setup(no_guest: bool) -> None:
    """Prepare this host (KVM node, libvirtd, virtlogd) and build the test guest.

    Idempotent: what is already in place is left alone.

    Example: virtlife lab setup
    """
    from virtlife.lab.guest import build_guest
    from virtlife.lab.hostprep import can_run_real_stack, prepare_local_host

    ok, why = can_run_real_stack()
    if not ok:
        click.echo(f"cannot prepare the real stack here: {why}")
        raise SystemExit(1)
    report = prepare_local_host(progress=_say)
    for line in report.actions + report.notes:
        click.echo(f"  {line}")
    if not no_guest:
        image = build_guest(progress=_say)
        click.echo(f"test guest: {image.kernel.parent} (kernel {image.kernel_version})")


@lab.group("guest")
def guest() -> None:
    """The test guest (Debian cloud kernel + busybox initramfs + qemu-ga)."""


@guest.command("build")
@click.option("--force", is_flag=True, help="Rebuild even when the cached guest is current.")
def guest_build(force: bool) -> None:
    """Build the test guest, or reuse the cached one when its recipe is unchanged.

    Example: virtlife lab guest build
    """
    from virtlife.lab.guest import build_guest

    image = build_guest(force=force, progress=_say)
    click.echo(f"kernel  {image.kernel}\ninitrd  {image.initrd}\ndisk    {image.disk}\n"
               f"version {image.kernel_version}\nrecipe  {image.recipe_hash[:16]}")


@lab.command("create")
@click.argument("name")
@click.option("--memory", "memory_mib", type=int, default=192, show_default=True)
@click.option("--dirty", "dirty_mib", type=int, default=None,
              help="Start the guest's memory dirtier over this many MiB.")
@click.option("--start", is_flag=True, help="Start it once defined.")
@click.option("--wait-agent", is_flag=True, help="With --start: wait for the agent.")
@host_option
@json_option
@pass_app
def lab_create(app: App, name: str, memory_mib: int, dirty_mib: int | None, start: bool,
               wait_agent: bool, host: str | None, as_json: bool) -> None:
    """Define a VM running the test guest (its own disk copy, agent, serial, VNC).

    Example: virtlife lab create t1 --start --wait-agent
    """
    from virtlife.lab.guest import build_guest
    from virtlife.lab.spec import lab_guest_spec

    s = app.services
    spec = lab_guest_spec(build_guest(), name, memory_mib=memory_mib, dirty_mib=dirty_mib)
    show_result(provision.create(s.lifecycle, spec, host=host or s.default_host(),
                                 start=start, wait_agent=wait_agent), as_json)


COMMANDS = [lab]
