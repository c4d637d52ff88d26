"""``virtlife list`` and ``virtlife state`` without click or Rich: the CLI's hot path.

These two read-only commands are what an operator (or a script's loop) runs most, so
their common forms skip click (~40 ms to import) and print plain tables
(``cli.table``). ``parse`` recognises exactly those forms::

    virtlife [-c URI] list [--all] [--host HOST] [--json]
    virtlife [-c URI] state VM [--json]

and returns None for anything else (help, -v, other options, odd values), which click
then parses as always. Without ``-c``, ``run_served`` first asks a running ``virtlife
serve`` (``cli.served``); otherwise ``run_direct`` reads the hosts through the
services. Both print through ``show_listing``/``show_state``, which the click commands
use too, so the output and exit codes are the same whichever path answered.
"""

from __future__ import annotations

import sys

from virtlife.errors import HostUnreachable, VirtlifeError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~10 ms)
if TYPE_CHECKING:
    from typing import Any

LIST_COLUMNS = ("HOST", "NAME", "STATE", "REASON", "VCPUS", "MEMORY")


class Request:
    """One hot-form command line, parsed (a plain class: dataclasses costs ~10 ms)."""

    __slots__ = ("as_json", "connect_uri", "host", "op", "show_all", "vm")

    def __init__(self, op: str, connect_uri: str | None = None, as_json: bool = False,
                 show_all: bool = False, host: str | None = None, vm: str = "") -> None:
        self.op = op  # "list" or "state"
        self.connect_uri = connect_uri
        self.as_json = as_json
        self.show_all = show_all
        self.host = host
        self.vm = vm

    def _key(self) -> tuple[object, ...]:
        return (self.op, self.connect_uri, self.as_json, self.show_all, self.host, self.vm)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Request) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return "Request" + repr(self._key())


def _value(args: list[str], i: int) -> str | None:
    """The value after option ``args[i]``, if it is a plain one."""
    if i + 1 >= len(args) or not args[i + 1] or args[i + 1].startswith("-"):
        return None
    return args[i + 1]


def parse(args: list[str]) -> Request | None:
    """The request ``args`` make, when they are one of the hot forms; else None."""
    i, connect = 0, None
    if args[:1] in (["-c"], ["--connect"]):
        connect = _value(args, 0)
        if connect is None:
            return None
        i = 2
    elif args and args[0].startswith("--connect="):
        connect = args[0].removeprefix("--connect=")
        if not connect:
            return None
        i = 1
    if i >= len(args) or args[i] not in ("list", "state"):
        return None
    op, rest = args[i], args[i + 1:]
    seen: set[str] = set()
    host: str | None = None
    positional: list[str] = []
    j = 0
    while j < len(rest):
        arg = rest[j]
        if arg in seen:
            return None  # repeated: click's rules decide
        if arg == "--json" or (op == "list" and arg == "--all"):
            seen.add(arg)
        elif op == "list" and arg == "--host":
            host = _value(rest, j)
            if host is None:
                return None
            seen.add(arg)
            j += 1
        elif arg.startswith("-") or op != "state":
            return None  # "--", "-h", "--host=X" and the rest are click's
        else:
            positional.append(arg)
        j += 1
    if op == "state" and len(positional) != 1:
        return None
    return Request(op, connect, "--json" in seen, "--all" in seen, host,
                   positional[0] if positional else "")


# -- output, shared with the click commands -----------------------------------------------

def emit_json(data: Any) -> None:
    """The CLI's JSON output (``cli.app.emit_json``): ``json.dumps(indent=2)``'s text."""
    from virtlife.cli.jsonout import dumps

    sys.stdout.write(dumps(data) + "\n")
    sys.stdout.flush()


def show_listing(vms: list[Any], unreachable: list[dict[str, Any]],
                 answered: list[str], as_json: bool, *,
                 columns: list[str] | None = None) -> None:
    """Print a fleet listing (``VMRow.as_dict`` rows, or with ``columns`` lists of
    values in that order, the server's compact form; unreachable hosts as ``host``,
    ``uri``, ``error``); ``HostUnreachable`` when no host answered."""
    if as_json:
        if columns is not None:
            vms = [dict(zip(columns, r, strict=True)) for r in vms]
        emit_json({"vms": vms, "unreachable": unreachable})
    else:
        from virtlife.cli.table import print_table

        if columns is None:
            cells = [(r["host"], r["name"], r["label"], r["reason"], str(r["vcpus"]),
                      f"{r['memory_mib']} MiB") for r in vms]
        else:
            h, n, lb, rs, vc, mem = (columns.index(k) for k in (
                "host", "name", "label", "reason", "vcpus", "memory_mib"))
            cells = [(r[h], r[n], r[lb], r[rs], str(r[vc]), f"{r[mem]} MiB") for r in vms]
        print_table(LIST_COLUMNS, cells + [(p["host"], "-", "unreachable", p["error"], "-",
                                            "-") for p in unreachable])
    if unreachable and not answered:
        names = ", ".join(p["host"] for p in unreachable)
        raise HostUnreachable(f"no host answered ({names}); nothing could be listed")


def show_state(vm: str, host: str, state: str, label: str, reason: str,
               as_json: bool) -> None:
    """Print a VM's state: ``label (reason)``, or the JSON document."""
    if as_json:
        emit_json({"host": host, "vm": vm, "state": state, "label": label, "reason": reason})
    else:
        sys.stdout.write((f"{label} ({reason})" if reason else label) + "\n")
        sys.stdout.flush()


def show(request: Request, answer: dict[str, Any]) -> None:
    """Print ``answer`` (the server's, or ``answer_direct``'s) to ``request``."""
    if request.op == "list":
        compact = "columns" in answer  # the server's compact form (``cli.served``)
        show_listing(answer["rows"] if compact else answer["vms"], answer["unreachable"],
                     answer["answered"], request.as_json,
                     columns=answer["columns"] if compact else None)
    else:
        show_state(request.vm, answer["host"], answer["state"], answer["label"],
                   answer["reason"], request.as_json)


def _printable(text: str) -> str:
    from virtlife.cli.main import printable

    return printable(text)


def _failed(err: VirtlifeError | dict[str, Any]) -> int:
    message, code = ((str(err), err.exit_code) if isinstance(err, VirtlifeError)
                     else (str(err["message"]), int(err["exit_code"])))
    sys.stderr.write(f"virtlife: {_printable(message)}\n")
    for note in getattr(err, "__notes__", ()):  # warnings beside the outcome
        sys.stderr.write(f"virtlife: warning: {_printable(str(note))}\n")
    sys.stderr.flush()
    return code


# -- the two paths -----------------------------------------------------------------------

def run_served(request: Request) -> int | None:
    """The exit code once a running server answered ``request``; None when none did."""
    from virtlife.cli import served

    message: dict[str, Any] = {"op": request.op}
    if request.op == "list":
        message |= {"all": request.show_all, "host": request.host, "form": "rows"}
    else:
        message |= {"vm": request.vm}
    answer = served.ask(message)
    if answer is None:
        return None
    if not answer.get("ok"):
        return _failed(answer)
    try:
        show(request, answer)
    except VirtlifeError as err:
        return _failed(err)
    return 0


def run_direct(request: Request) -> int:
    """Answer ``request`` from the hosts themselves (libvirt, through the services)."""
    from virtlife.logs import setup_logging

    setup_logging(0, None, defer=True)  # logging loaded only if a record needs it
    try:
        show(request, answer_direct(request))
    except VirtlifeError as err:
        return _failed(err)
    return 0


def answer_direct(request: Request) -> dict[str, Any]:
    """What the server would answer to ``request``, read here through the services."""
    from virtlife.services.context import open_services

    services = open_services(request.connect_uri)
    try:
        for message in services.warnings:
            sys.stderr.write(f"virtlife: warning: {message}\n")
        if request.op == "list":
            return listing_answer(services.fleet.list_vms(include_inactive=request.show_all,
                                                          host=request.host))
        from virtlife.services.observe import current_state  # as lifecycle.state reads it

        host, state = current_state(services.fleet, services.journal, request.vm)
        return {"host": host, "state": state.state.value, "label": state.state.label,
                "reason": state.reason}
    finally:  # the process ends after this answer: its connections are not awaited
        services.close(wait=False)


def listing_answer(listing: Any) -> dict[str, Any]:
    """A ``FleetListing`` as the answer ``show_listing`` prints."""
    return {"vms": [r.as_dict() for r in listing.rows],
            "unreachable": [{"host": p.host, "uri": p.uri, "error": p.message}
                            for p in listing.unreachable],
            "answered": list(listing.answered)}
