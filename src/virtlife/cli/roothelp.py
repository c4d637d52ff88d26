"""The index of ``virtlife``'s commands and its own help page, printed without click.

``virtlife --help`` (and a bare ``virtlife``) is what a newcomer runs first and what
shell completion scripts and wrappers run often; importing click alone costs more than
all of ``virsh --help``. This module holds what that page says (``HELP``, ``OPTIONS``,
``INDEX``, ``EPILOG``) and lays it out as click 8 does (usage line, paragraphs wrapped
to the terminal, definition lists, the commands' first sentences shortened to fit),
with the standard library's ``textwrap`` only. ``cli.root`` builds its click group
from the same strings, and ``tests/unit/test_cli_roothelp.py`` compares this
rendering with click's own, byte for byte, at every width click can choose: a change
on either side that is not made on the other fails there. It must not import click,
the services or anything that talks to a host.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~10 ms)
if TYPE_CHECKING:
    import textwrap

PROG = "virtlife"
USAGE_ARGS = "[OPTIONS] COMMAND [ARGS]..."

# The root group's help (click's ``help=``), already as ``inspect.cleandoc`` leaves it.
HELP = """\
virtlife: manage the whole life of KVM/QEMU VMs on libvirt hosts.

VMs are named NAME, HOST/NAME, UUID or HOST/UUID. Example: virtlife -c test:///default list --all"""

# The root group's options as its help lists them: the option column, then its help.
OPTIONS: dict[str, str] = {
    "-c, --connect URI": "Talk to this libvirt URI directly, without the inventory "
                         "(e.g. test:///default).",
    "-v, --verbose": "Print progress while waiting and log INFO to stderr; -vv logs DEBUG.",
    "--log-file PATH": "Also append the log to PATH (INFO; DEBUG with -vv).",
    "--queue": "When another operation runs on the VM, wait for it to end instead of "
               "being refused (exit 6).",
    "--version": "Show the version and exit.",
    "-h, --help": "Show this message and exit.",
}

EPILOG = """\b
Exit codes:
  0 done            4 host unreachable    64  bad usage or input
  1 failed          5 timed out           130 interrupted (Ctrl-C)
  2 not found       6 busy (another operation runs on the VM)
  3 refused by the VM's state             7 store unavailable
  8 guest agent unavailable               9 guest agent refused or failed the command
"""

# Every top-level command: name -> (module under virtlife.cli, attribute, the first
# sentence of its help, which is all ``virtlife --help`` shows of it).
INDEX: dict[str, tuple[str, str, str]] = {
    "agent": ("agent", "agent",
        'Use the QEMU guest agent of VM (the qemu-guest-agent service in the guest).'),
    "attach-iso": ("media", "attach_iso",
        "Attach an ISO file (a path on the VM's host) to a VM as a CD-ROM."),
    "balance": ("balance", "balance",
        "Plan the fewest migrations that bring the hosts' load spread under a threshold."),
    "console": ("console", "console",
        "Attach this terminal to a running VM's serial console (Ctrl-] leaves)."),
    "create": ("vm", "create",
        'Define a new VM from a small spec (agent channel and VNC on by default).'),
    "define": ("vm", "define",
        "Define a VM from a domain XML file (or update an existing VM's definition)."),
    "demo": ("demo", "demo",
        'Walk a VM through its whole life on this host (or on the test driver).'),
    "destroy": ("vm", "destroy",
        'Stop the VM at once (pull the plug).'),
    "dumpxml": ("vm", "dumpxml",
        "Print the VM's domain XML."),
    "events": ("fleet", "events",
        'Stream lifecycle and guest-agent events from all hosts (Ctrl-C stops).'),
    "graphics": ("console", "graphics",
        "Show or change a VM's VNC graphics (its definition; a VM without any gets them)."),
    "history": ("fleet", "history",
        'Show the journal of operations, newest first.'),
    "host": ("fleet", "host",
        'Manage the host inventory.'),
    "info": ("vm", "info",
        'Print what libvirt knows about the VM.'),
    "lab": ("lab", "lab",
        'The test lab: host preparation, the tiny test guest, and N libvirt hosts on '
        'this machine for migrations (lab up / down / status).'),
    "leader": ("leader", "leader",
        'Print the supervisor that leads now: machine, pid, epoch and since when.'),
    "list": ("fleet", "list_vms",
        'List the VMs of every host (hosts are asked at once).'),
    "managedsave": ("vm", "managedsave",
        "Save the VM's RAM to libvirt's managed image; the next start restores it."),
    "managedsave-remove": ("vm", "managedsave_remove",
        "Delete the VM's managed-save image (the next start boots fresh)."),
    "migrate": ("migrate", "migrate",
        'Move VM to host DEST: live by default, checked first.'),
    "migrate-abort": ("migrate", "migrate_abort",
        'Abort the migration running on VM (started by any process); it stays at its '
        'source, running.'),
    "operation": ("ops", "operation",
        'Show one operation by its id (as printed by --json results and `operations`).'),
    "operations": ("ops", "operations",
        'List the operations running on any VM now, from every virtlife process.'),
    "pmsuspend": ("vm", "pmsuspend",
        'Ask the guest (through its agent) to suspend itself.'),
    "pmwakeup": ("vm", "pmwakeup",
        'Wake a pmsuspended guest, then set its clock right.'),
    "reboot": ("vm", "reboot",
        'Ask the guest to reboot, and wait until it resets.'),
    "reset": ("vm", "reset",
        'Hard-reset the VM (like pressing the reset button).'),
    "restore": ("vm", "restore",
        'Restore a VM from a save FILE, then set its clock right. A failed restore keeps '
        'the file.'),
    "resume": ("vm", "resume",
        'Resume a paused VM, then set its clock right through the agent.'),
    "save": ("vm", "save",
        "Save the VM's RAM to FILE and stop it."),
    "serve": ("serve", "serve",
        'Serve the REST API and the web UI until Ctrl-C or SIGTERM.'),
    "shutdown": ("vm", "shutdown",
        'Ask the guest to power off and wait until it is shut off.'),
    "snapshot": ("snapshot", "snapshot",
        'Take, list, revert to and delete snapshots of VM.'),
    "start": ("vm", "start",
        'Start a shut-off VM (from its managed save when it has one, then the guest '
        'clock is set right).'),
    "state": ("vm", "state",
        'Print the VM\'s state and libvirt\'s reason, e.g. "paused (user)".'),
    "store": ("store", "store",
        'The store of the inventory, journal and tokens (SQLite file or PostgreSQL).'),
    "suspend": ("vm", "suspend",
        "Pause the VM's vCPUs (RAM stays in the host)."),
    "token": ("serve", "token",
        'Bearer tokens of the REST API and web UI, each with a role.'),
    "undefine": ("vm", "undefine",
        "Remove a shut-off VM's definition (its disks stay)."),
    "viewer": ("console", "viewer",
        "Open a running VM's VNC console in remote-viewer (virt-viewer)."),
    "viewer-file": ("console", "viewer_file",
        "Write a remote-viewer (virt-viewer) connection file for a running VM's VNC."),
    "vm": ("balance", "vm",
        'Per-VM settings: pin a VM to keep it out of balancing.'),
    "vnc": ("console", "vnc",
        "Where a running VM's VNC server is: address:port and display."),
    "windows-drivers-iso": ("media", "windows_drivers_iso",
        'Build the virtio-win driver ISO for Windows guests from a driver tree.'),
}

# click's HelpFormatter: the text width is the terminal's, minus 2, within [50, 78];
# a definition list's first column is at most 30 wide, 2 spaces from the second.
MAX_WIDTH = 80
MIN_WIDTH = 50
INDENT = 2
COL_MAX = 30
COL_SPACING = 2


def terminal_columns() -> int:
    """``shutil.get_terminal_size().columns`` (click's source of the width), without
    importing shutil: ``$COLUMNS`` when a positive integer, else the terminal of
    ``sys.__stdout__``, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns > 0:
        return columns
    try:
        size = os.get_terminal_size(sys.__stdout__.fileno())  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80
    return size.columns or 80


def help_width(columns: int | None = None) -> int:
    """The width click lays the help out in, for a terminal ``columns`` wide."""
    if columns is None:
        columns = terminal_columns()
    return max(min(columns, MAX_WIDTH) - 2, MIN_WIDTH)


_wrapper_class: type[textwrap.TextWrapper] | None = None


def _wrapper(width: int, initial_indent: str = "",
             subsequent_indent: str = "") -> textwrap.TextWrapper:
    """click's ``TextWrapper``: the standard one, except that a word longer than a line
    is cut where the line ends, never after a hyphen."""
    global _wrapper_class
    if _wrapper_class is None:
        import textwrap

        class Wrapper(textwrap.TextWrapper):
            def _handle_long_word(self, reversed_chunks: list[str], cur_line: list[str],
                                  cur_len: int, width: int) -> None:
                space_left = max(width - cur_len, 1)
                if self.break_long_words:
                    last = reversed_chunks[-1]
                    cur_line.append(last[:space_left])
                    reversed_chunks[-1] = last[space_left:]
                elif not cur_line:
                    cur_line.append(reversed_chunks.pop())

        _wrapper_class = Wrapper
    return _wrapper_class(width, initial_indent=initial_indent,
                          subsequent_indent=subsequent_indent, replace_whitespace=False)


def wrap_text(text: str, width: int, indent: str = "",
              preserve_paragraphs: bool = False) -> str:
    """``click.formatting.wrap_text`` with the same indent on every line: paragraphs
    are separated by empty lines, and one that starts with a ``\\b`` line is kept as
    it is written (only indented)."""
    text = text.expandtabs()
    wrapper = _wrapper(width, indent, indent)
    if not preserve_paragraphs:
        return wrapper.fill(text)
    paragraphs: list[tuple[int, bool, str]] = []
    lines: list[str] = []
    first_indent: int | None = None

    def flush() -> None:
        if not lines:
            return
        if lines[0].strip() == "\b":
            paragraphs.append((first_indent or 0, True, "\n".join(lines[1:])))
        else:
            paragraphs.append((first_indent or 0, False, " ".join(lines)))
        lines.clear()

    for line in text.splitlines():
        if not line:
            flush()
            first_indent = None
        else:
            if first_indent is None:
                stripped = line.lstrip()
                first_indent = len(line) - len(stripped)
                line = stripped
            lines.append(line)
    flush()
    out = []
    for extra, raw, paragraph in paragraphs:
        inner = indent + " " * extra
        if raw:
            out.append("\n".join(inner + line for line in paragraph.splitlines()))
        else:
            out.append(_wrapper(width, inner, inner).fill(paragraph))
    return "\n\n".join(out)


def short_help(text: str, limit: int) -> str:
    """click's short help of a command: its first sentence, shortened to ``limit``."""
    words = text.partition("\n\n")[0].split()
    if words and words[0] == "\b":
        words = words[1:]
    if not words:
        return ""
    last = len(words) - 1
    for i, word in enumerate(words):
        # a period ends the sentence unless a lowercase word follows ("vs. this")
        if word.endswith(".") and (i == last or not words[i + 1][0].islower()):
            words = words[:i + 1]
            break
    shortened = " ".join(words)
    if len(shortened) <= limit:
        return shortened.strip()
    if limit < len("..."):
        return "..."
    import textwrap

    return textwrap.shorten(shortened, limit, placeholder="...",
                            break_on_hyphens=False).strip()


class Page:
    """The parts of ``click.HelpFormatter`` the root help uses, writing into a list."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.indent = 0
        self.parts: list[str] = []

    def paragraph(self) -> None:
        if self.parts:
            self.parts.append("\n")

    def usage(self, prog: str, args: str) -> None:
        prefix = f"{'Usage: ':>{self.indent}}{prog} "
        text_width = self.width - self.indent
        if text_width >= len(prefix) + 20:
            wrapper = _wrapper(text_width, prefix, " " * len(prefix))
            self.parts.append(wrapper.fill(args))
        else:
            self.parts.append(prefix + "\n")
            indent = " " * (max(self.indent, len("Usage: ")) + 4)
            self.parts.append(_wrapper(text_width, indent, indent).fill(args))
        self.parts.append("\n")

    def text(self, text: str) -> None:
        """An indented block of paragraphs (the help text, the epilog)."""
        self.paragraph()
        self.indent += INDENT
        self.parts.append(wrap_text(text, self.width, " " * self.indent,
                                    preserve_paragraphs=True) + "\n")
        self.indent -= INDENT

    def section(self, heading: str, rows: list[tuple[str, str]]) -> None:
        """A heading and its definition list (options, commands)."""
        self.paragraph()
        self.parts.append(f"{'':>{self.indent}}{heading}:\n")
        self.indent += INDENT
        first_col = min(max(len(term) for term, _ in rows), COL_MAX) + COL_SPACING
        for term, text in rows:
            self.parts.append(f"{'':>{self.indent}}{term}")
            if not text:
                self.parts.append("\n")
                continue
            if len(term) <= first_col - COL_SPACING:
                self.parts.append(" " * (first_col - len(term)))
            else:
                self.parts.append("\n" + " " * (first_col + self.indent))
            text_width = max(self.width - first_col - 2, 10)
            lines = wrap_text(text, text_width, preserve_paragraphs=True).splitlines()
            if not lines:
                self.parts.append("\n")
                continue
            self.parts.append(f"{lines[0]}\n")
            for line in lines[1:]:
                self.parts.append(f"{'':>{first_col + self.indent}}{line}\n")
        self.indent -= INDENT

    def value(self) -> str:
        return "".join(self.parts)


def render(width: int | None = None) -> str:
    """``virtlife --help`` as click prints it (``ctx.get_help()``: no final newline),
    laid out ``width`` columns wide (default: what click picks for this terminal)."""
    page = Page(help_width() if width is None else width)
    page.usage(PROG, USAGE_ARGS)
    page.text(HELP)
    page.section("Options", list(OPTIONS.items()))
    limit = page.width - 6 - max(len(name) for name in INDEX)
    page.section("Commands", [(name, short_help(INDEX[name][2], limit))
                              for name in sorted(INDEX)])
    page.text(EPILOG.strip("\n"))
    return page.value().rstrip("\n")


def print_help(*, to_stderr: bool = False) -> None:
    """Print the help page as ``click.echo`` would (stdout, or stderr for a bare
    ``virtlife``, which click reports as a usage error)."""
    stream = sys.stderr if to_stderr else sys.stdout
    stream.write(render() + "\n")
    stream.flush()
