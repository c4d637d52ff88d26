"""``virtlife agent VM ...``: the guest-agent commands, each a call into ``GuestAgent``.

``agent VM ping | info | osinfo | hostname | timezone | users | fsinfo | ifaddr | time |
freeze | thaw | freeze-status | set-password | exec | command | enable``, and
``agent enable VM`` as the issue's operators type it. Reads print a table (or
``--json``); changes print the operation's result. A password is read from the
terminal (twice) or from stdin, never from the command line.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

import click

from virtlife.cli.app import (
    App,
    emit_json,
    group_vm,
    json_option,
    pass_app,
    show_result,
    show_table,
    warn,
)
from virtlife.cli.params import SECONDS
from virtlife.errors import InvalidInput

AGENT_TIMEOUT = click.IntRange(min=1, max=3600)
# exec's output limit and input: the service's DEFAULT_MAX_OUTPUT, MAX_OUTPUT and
# MAX_STDIN (a test checks they agree); not imported, so `agent --help` loads no libvirt
MAX_OUTPUT_DEFAULT = 2**20
MAX_OUTPUT_MOST = 1500 * 2**10
STDIN_MOST = 64 * 2**10


class AgentGroup(click.Group):
    """``agent VM SUB`` with ``agent enable VM`` read as ``agent VM enable``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if len(args) >= 2 and args[0] == "enable" and args[1] not in self.commands:
            args = [args[1], "enable", *args[2:]]
        return super().parse_args(ctx, args)


@click.group(cls=AgentGroup)
@click.argument("vm", metavar="VM")
def agent(vm: str) -> None:
    """Use the QEMU guest agent of VM (the qemu-guest-agent service in the guest).

    Example: virtlife agent web1 ifaddr
    """


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


@agent.command()
@click.option("--timeout", "timeout_s", type=AGENT_TIMEOUT, default=5, show_default=True,
              help="Seconds to wait for the answer.")
@json_option
@pass_app
def ping(app: App, timeout_s: int, as_json: bool) -> None:
    """Check that the guest agent answers.

    Example: virtlife agent web1 ping
    """
    seconds = app.services.agent.ping(group_vm(), timeout_s=timeout_s)
    if as_json:
        emit_json({"vm": group_vm(), "answered": True, "seconds": round(seconds, 4)})
    else:
        click.echo(f"{group_vm()}: the guest agent answered in {seconds * 1000:.0f} ms")


@agent.command()
@json_option
@pass_app
def info(app: App, as_json: bool) -> None:
    """The agent's version and its commands, enabled or not (guest-info).

    Example: virtlife agent web1 info --json
    """
    got = app.services.agent.info(group_vm())
    if as_json:
        emit_json(got.as_dict())
        return
    click.echo(f"qemu-guest-agent {got.version}")
    show_table(["command", "enabled"], [(c.name, "yes" if c.enabled else "no")
                                        for c in got.commands])


@agent.command()
@json_option
@pass_app
def osinfo(app: App, as_json: bool) -> None:
    """The guest's operating system (name, version, kernel, machine).

    Example: virtlife agent web1 osinfo
    """
    got = app.services.agent.osinfo(group_vm())
    if as_json:
        emit_json(got)
    else:
        show_table(["field", "value"], sorted(got.items()))


@agent.command()
@json_option
@pass_app
def hostname(app: App, as_json: bool) -> None:
    """The guest's host name.

    Example: virtlife agent web1 hostname
    """
    name = app.services.agent.hostname(group_vm())
    if as_json:
        emit_json({"vm": group_vm(), "hostname": name})
    else:
        click.echo(name)


@agent.command()
@json_option
@pass_app
def timezone(app: App, as_json: bool) -> None:
    """The guest's time zone and its offset from UTC.

    Example: virtlife agent web1 timezone
    """
    got = app.services.agent.timezone(group_vm())
    if as_json:
        emit_json(got)
        return
    offset = int(str(got["offset_s"]))
    sign = "+" if offset >= 0 else "-"
    hours, rest = divmod(abs(offset), 3600)
    click.echo(f"{got['name'] or '(unnamed)'} (UTC{sign}{hours:02d}:{rest // 60:02d})")


@agent.command()
@json_option
@pass_app
def users(app: App, as_json: bool) -> None:
    """The users logged in to the guest.

    Example: virtlife agent web1 users
    """
    got = app.services.agent.users(group_vm())
    if as_json:
        emit_json(got)
        return
    if not got:
        click.echo("no user is logged in")
        return
    show_table(["user", "domain", "login"], [
        (u["name"], u["domain"] or "-",
         _when(float(str(u["login_time"]))) if u["login_time"] is not None else "-")
        for u in got])


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    mib = value / 2**20
    return f"{mib / 1024:.1f} GiB" if mib >= 1024 else f"{mib:.1f} MiB"


@agent.command()
@json_option
@pass_app
def fsinfo(app: App, as_json: bool) -> None:
    """The guest's mounted file systems and the VM disks under them (domfsinfo).

    Example: virtlife agent web1 fsinfo
    """
    got = app.services.agent.fsinfo(group_vm())
    if as_json:
        emit_json([f.as_dict() for f in got])
        return
    show_table(["mountpoint", "name", "type", "disks", "size", "used"], [
        (f.mountpoint, f.name, f.fstype, ",".join(f.disks) or "-", _size(f.total_bytes),
         _size(f.used_bytes)) for f in got])


@agent.command()
@json_option
@pass_app
def ifaddr(app: App, as_json: bool) -> None:
    """The guest's network interfaces and addresses (domifaddr --source agent).

    Example: virtlife agent web1 ifaddr --json
    """
    got = app.services.agent.ifaddr(group_vm())
    if as_json:
        emit_json([i.as_dict() for i in got])
        return
    rows = []
    for nic in got:
        for a in nic.addresses or ():
            rows.append((nic.name, nic.hwaddr or "-", a.family, str(a)))
        if not nic.addresses:
            rows.append((nic.name, nic.hwaddr or "-", "-", "-"))
    show_table(["interface", "MAC address", "protocol", "address"], rows)


@agent.command()
@click.option("--set", "set_to", metavar="ISO8601", default=None,
              help="Set the guest clock to this time (with a zone, e.g. ...Z).")
@click.option("--sync", is_flag=True, help="Set the guest clock right (its host's clock).")
@json_option
@pass_app
def time(app: App, set_to: str | None, sync: bool, as_json: bool) -> None:
    """The guest's clock against this machine's (domtime); or set it.

    Example: virtlife agent web1 time --sync
    """
    if set_to is not None and sync:
        raise InvalidInput("give --set or --sync, not both")
    from virtlife.services.clock import describe_offset, parse_time

    s = app.services.agent
    if set_to is None and not sync:
        reading = s.time(group_vm())
        if as_json:
            emit_json({"vm": group_vm(), **reading.as_dict(), "guest_iso": _when(reading.guest)})
        else:
            offset = describe_offset(reading.offset_s).replace("in step", "in step with")
            click.echo(f"{_when(reading.guest)} in the guest ({offset} this machine's clock)")
        return
    when = parse_time(set_to) if set_to is not None else None
    result, outcome = s.set_time(group_vm(), when, sync=sync, **app.call)
    if as_json:
        emit_json({**result.as_dict(), "clock": outcome.as_dict()})
    else:
        show_result(result)


@agent.command()
@click.argument("mountpoints", nargs=-1, metavar="[MOUNTPOINT]...")
@json_option
@pass_app
def freeze(app: App, mountpoints: tuple[str, ...], as_json: bool) -> None:
    """Freeze the guest's file systems (all, or these) until `agent VM thaw`.

    Writes in the guest wait while they are frozen; other virtlife commands on the VM
    say so.

    Example: virtlife agent web1 freeze /var/lib/db
    """
    show_result(app.services.agent.freeze(group_vm(), list(mountpoints) or None, **app.call),
                as_json)


@agent.command()
@json_option
@pass_app
def thaw(app: App, as_json: bool) -> None:
    """Thaw the guest's frozen file systems.

    Example: virtlife agent web1 thaw
    """
    show_result(app.services.agent.thaw(group_vm(), **app.call), as_json)


@agent.command("freeze-status")
@json_option
@pass_app
def freeze_status(app: App, as_json: bool) -> None:
    """Whether the guest's file systems are frozen, and who froze them.

    Example: virtlife agent web1 freeze-status
    """
    got = app.services.agent.freeze_status(group_vm())
    for note in got.notes:
        warn(note)
    if as_json:
        emit_json(got.as_dict())
        return
    line = got.status
    if got.mark is not None:
        line += (f" (by operation {got.mark.op_id}, {got.mark.kind.value}, since "
                 f"{got.mark.frozen_at.isoformat(timespec='seconds')})")
    click.echo(line)


def read_password(whose: str) -> str:
    """A new password for ``whose``: asked twice on a terminal, else one line of stdin."""
    if sys.stdin.isatty():
        return str(click.prompt(f"new password for {whose}", hide_input=True,
                                confirmation_prompt="again"))
    line = sys.stdin.readline()
    if not line:
        raise InvalidInput("no password on stdin")
    return line.rstrip("\n")


@agent.command("set-password")
@click.argument("user")
@click.option("--crypted", is_flag=True,
              help="The input is a crypt(3) hash (e.g. from mkpasswd), not the password.")
@json_option
@pass_app
def set_password(app: App, user: str, crypted: bool, as_json: bool) -> None:
    """Set USER's password in the guest; it is read from the terminal (twice) or from
    one line of stdin, never from the command line.

    Example: printf '%s\\n' "$PW" | virtlife agent web1 set-password root
    """
    password = read_password(user)
    show_result(app.services.agent.set_password(group_vm(), user, password, crypted=crypted,
                                                **app.call), as_json)


@agent.command("exec", context_settings={"ignore_unknown_options": True})
@click.option("--timeout", "timeout_s", type=SECONDS, default=60.0, show_default=True,
              help="Seconds the program may run.")
@click.option("--stdin", "pass_stdin", is_flag=True,
              help=f"Give it this command's stdin (at most {STDIN_MOST // 1024} KiB).")
@click.option("--max-output", "max_output", type=click.IntRange(min=0),
              default=MAX_OUTPUT_DEFAULT, show_default=True, metavar="BYTES",
              help=f"Keep at most BYTES of its stdout, and of its stderr (at most "
                   f"{MAX_OUTPUT_MOST}); the rest is read away in the guest. 0: no limit, "
                   "and no /bin/sh around it (a guest without one); output over 3 MiB is "
                   "then lost.")
@json_option
@click.argument("argv", nargs=-1, required=True, metavar="-- CMD [ARG]...")
@pass_app
def exec_(app: App, timeout_s: float, pass_stdin: bool, max_output: int, as_json: bool,
          argv: tuple[str, ...]) -> None:
    """Run a program in the guest; print its output and end with its exit code.

    Its output is cut at --max-output in the guest, with a warning that says so.

    Example: virtlife agent web1 exec -- /bin/cat /etc/os-release
    """
    # one byte over the most the service takes is enough for it to refuse
    data = sys.stdin.buffer.read(STDIN_MOST + 1) if pass_stdin else None
    got = app.services.agent.exec(group_vm(), list(argv), timeout_s=timeout_s, stdin=data,
                                  max_output=max_output, **app.call)
    if as_json:
        emit_json(got.as_dict())
    else:
        sys.stdout.buffer.write(got.stdout)
        sys.stdout.flush()
        sys.stderr.buffer.write(got.stderr)
        sys.stderr.flush()
        for stream in got.cut:
            click.echo(f"virtlife: warning: the program's {stream} was cut at "
                       f"{got.max_output} bytes (--max-output)", err=True)
        if got.truncated and not got.cut:
            click.echo("virtlife: warning: the guest agent cut the output short", err=True)
    code = got.exit_code if got.exit_code is not None else 128 + (got.signal or 0)
    if code:
        sys.exit(code)


@agent.command()
@click.argument("command_json", metavar="JSON")
@click.option("--timeout", "timeout_s", type=AGENT_TIMEOUT, default=5, show_default=True,
              help="Seconds to wait for the answer.")
@pass_app
def command(app: App, command_json: str, timeout_s: int) -> None:
    """Send one raw QMP command to the agent and print its answer (pretty JSON).

    Example: virtlife agent web1 command '{"execute": "guest-get-vcpus"}'
    """
    reply: Any = app.services.agent.command(group_vm(), command_json, timeout_s=timeout_s,
                                            **app.call)
    click.echo(json.dumps(reply, indent=2, sort_keys=True))


@agent.command()
@json_option
@pass_app
def enable(app: App, as_json: bool) -> None:
    """Add the guest-agent channel to VM's definition (it applies at the next boot).

    Example: virtlife agent enable web1
    """
    show_result(app.services.agent.enable(group_vm(), **app.call), as_json)


COMMANDS = [agent]
