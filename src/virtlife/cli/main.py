"""Entry point of the ``virtlife`` command: the click group and the one error boundary.

Every ``VirtlifeError`` becomes one line on stderr and its exit code; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from virtlife import __version__
from virtlife.cli import demo, fleet, lab, vm
from virtlife.cli.app import App
from virtlife.errors import VirtlifeError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--connect", "connect_uri", default=None, metavar="URI",
              help="Talk to this libvirt URI directly, without the inventory "
                   "(e.g. test:///default).")
@click.option("-v", "--verbose", is_flag=True, help="Print progress while waiting.")
@click.version_option(__version__, prog_name="virtlife")
@click.pass_context
def cli(ctx: click.Context, connect_uri: str | None, verbose: bool) -> None:
    """virtlife: manage the whole life of KVM/QEMU VMs on libvirt hosts.

    VMs are named NAME or HOST/NAME. Example: virtlife -c test:///default list --all
    """
    app = App(connect_uri, verbose)
    ctx.obj = app
    ctx.call_on_close(app.close)


for module in (vm, fleet, lab, demo):
    for command in module.COMMANDS:
        cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        result = cli.main(args=list(argv) if argv is not None else None,
                          prog_name="virtlife", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("virtlife: aborted", err=True)
        return 130
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except VirtlifeError as err:
        click.echo(f"virtlife: {err}", err=True)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
