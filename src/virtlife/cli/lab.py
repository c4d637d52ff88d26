"""Lab commands: prepare this host, build the test guest, create test-guest VMs.

``lab create`` checks its NAME (it becomes a file name) before anything else, and
leaves the disk copy to ``provision.create``, which writes nothing before every check
has passed. A file-system fault while building the guest is one ``LabError`` line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import click

from virtlife import config, errors
from virtlife.cli import labhosts, lablight
from virtlife.cli.app import App, host_option, json_option, pass_app, show_result
from virtlife.cli.params import MEMORY_MIB, NEW_VM_NAME

if TYPE_CHECKING:
    from virtlife.lab.guest import GuestImage

T = TypeVar("T")


def _say(message: str) -> None:
    click.echo(f"  {message}")


def _guest(build: Callable[[], T]) -> T:
    """Run a guest build; an ``OSError`` (a cache path that is a file, a full disk) is
    an environment fault, told in one line."""
    try:
        return build()
    except OSError as err:
        where = f" ({err.filename})" if err.filename else ""
        raise errors.LabError(
            f"cannot build the test guest under {config.cache_dir()}: "
            f"{err.strerror or err}{where}; check VIRTLIFE_CACHE") from err


def _build_guest(force: bool = False) -> GuestImage:
    from virtlife.lab.guest import build_guest

    return _guest(lambda: build_guest(force=force, progress=_say))


@click.group()
def lab() -> None:
    """The test lab: host preparation, the tiny test guest, and N libvirt hosts on this
    machine for migrations (lab up / down / status).

    \b
    Examples: virtlife lab setup
              virtlife lab up 2 && virtlife lab status
              virtlife lab down
    """


@lab.command("setup")
@click.option("--no-guest", is_flag=True, help="Do not build the test guest.")
def lab_setup(no_guest: bool) -> None:
    """Prepare this host (KVM node, libvirtd, virtlogd) and build the test guest.

    Idempotent: what is already in place is left alone.

    Example: virtlife lab setup
    """
    from virtlife.lab.hostprep import can_run_real_stack, prepare_local_host

    ok, why = can_run_real_stack()
    if not ok:
        click.echo(f"cannot prepare the real stack here: {why}")
        raise SystemExit(1)
    report = prepare_local_host(progress=_say)
    for line in report.actions + report.notes:
        click.echo(f"  {line}")
    if not no_guest:
        image = _build_guest()
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
    image = _build_guest(force)
    click.echo(f"kernel  {image.kernel}\ninitrd  {image.initrd}\ndisk    {image.disk}\n"
               f"version {image.kernel_version}\nrecipe  {image.recipe_hash[:16]}")


@lab.command("create")
@click.argument("name", type=NEW_VM_NAME)
@click.option("--memory", "memory_mib", type=MEMORY_MIB, default=192, show_default=True)
@click.option("--dirty", "dirty_mib", type=click.IntRange(min=1), default=None,
              help="Start the guest's memory dirtier over this many MiB.")
@click.option("--ignore-acpi", is_flag=True,
              help="A guest that ignores the ACPI power button (tests the shutdown ladder).")
@click.option("--start", is_flag=True, help="Start it once defined.")
@click.option("--wait-agent", is_flag=True, help="With --start: wait for the agent.")
@host_option
@json_option
@pass_app
def lab_create(app: App, name: str, memory_mib: int, dirty_mib: int | None,
               ignore_acpi: bool, start: bool, wait_agent: bool, host: str | None,
               as_json: bool) -> None:
    """Define a VM running the test guest (its own disk copy, agent, serial, VNC).

    Example: virtlife lab create t1 --start --wait-agent
    """
    from virtlife.lab import cluster
    from virtlife.lab.guest import build_guest
    from virtlife.lab.spec import lab_guest_spec
    from virtlife.services import provision

    s = app.services
    target = host or s.default_host()
    # on a lab host the disk goes into the shared pool, where a migration can prove it
    lab = cluster.status()
    pool = lab.record.pool_dir if lab is not None and any(
        h.name == target for h in lab.hosts) else None
    spec = lab_guest_spec(_guest(build_guest), name, memory_mib=memory_mib,
                          dirty_mib=dirty_mib, ignore_acpi=ignore_acpi, images_dir=pool)
    show_result(provision.create(s.lifecycle, spec, host=target,
                                 facts=s.facts,
                                 start=start, wait_agent=wait_agent, **app.call), as_json)


for _command in labhosts.COMMANDS:  # up, down, status: the multi-host lab
    lab.add_command(_command)
for _command in lablight.COMMANDS:  # light-up: many cheap hosts (lab down ends them too)
    lab.add_command(_command)

COMMANDS = [lab]
