"""The HA simulator's scenario scripts: a small line format, parsed into plain values.

One declaration or event per line; ``#`` starts a comment::

    host a memory=8192 fencer=yes watchdog=no fence-command=no
    vm web1 on a priority=10 memory=1024 [stopped]
    supervisor s1            (the first one declared leads from the start)
    option disk-locks=yes
    at 10 power a off        (power HOST on|off)
    at 10 network a down     (network HOST down|up: the host reaches neither the
                              database nor the supervisors)
    at 10 keepalive a fail   (keepalive HOST fail|ok: libvirt keepalive only)
    at 10 fencer a pause     (fencer HOST pause|resume: SIGSTOP / SIGCONT)
    at 10 supervisor s1 stall 30   (it decides at 10, then is stopped for 30 s before
                                    carrying out what it decided)
    at 10 crash web1         (the VM's QEMU dies on whichever host runs it)
    at 10 confirm-dead a     (`virtlife host confirm-dead a`)
    end 60

Parsing only; ``sim`` runs it. No I/O beyond the text given.
"""

from __future__ import annotations

from dataclasses import dataclass


class ScriptError(ValueError):
    pass


@dataclass(frozen=True)
class HostDecl:
    name: str
    memory_mib: int = 8192
    fencer: bool = True
    watchdog: bool = False
    fence_command: bool = False


@dataclass(frozen=True)
class VMDecl:
    name: str
    host: str
    priority: int = 0
    memory_mib: int = 1024
    stopped: bool = False


@dataclass(frozen=True)
class Event:
    at: int
    words: tuple[str, ...]

    def __str__(self) -> str:
        return " ".join(self.words)


@dataclass(frozen=True)
class Script:
    hosts: tuple[HostDecl, ...]
    vms: tuple[VMDecl, ...]
    supervisors: tuple[str, ...]
    events: tuple[Event, ...]
    end: int
    disk_locks: bool = False


_YES = {"yes": True, "no": False}

_EVENTS: dict[str, tuple[int, set[str] | None]] = {
    # verb: (number of arguments, allowed last words or None)
    "power": (2, {"on", "off"}),
    "network": (2, {"up", "down"}),
    "keepalive": (2, {"fail", "ok"}),
    "fencer": (2, {"pause", "resume"}),
    "supervisor": (3, None),
    "crash": (1, None),
    "confirm-dead": (1, None),
}


def _kv(words: list[str], line: int) -> dict[str, str]:
    out: dict[str, str] = {}
    for word in words:
        if "=" not in word:
            raise ScriptError(f"line {line}: expected key=value, found {word!r}")
        key, value = word.split("=", 1)
        out[key] = value
    return out


def _flag(kv: dict[str, str], key: str, default: bool, line: int) -> bool:
    value = kv.pop(key, None)
    if value is None:
        return default
    if value not in _YES:
        raise ScriptError(f"line {line}: {key} is yes or no, found {value!r}")
    return _YES[value]


def _unused(kv: dict[str, str], line: int) -> None:
    if kv:
        raise ScriptError(f"line {line}: unknown setting(s) {', '.join(sorted(kv))}")


def parse(text: str) -> Script:
    hosts: list[HostDecl] = []
    vms: list[VMDecl] = []
    supervisors: list[str] = []
    events: list[Event] = []
    end: int | None = None
    disk_locks = False
    for number, raw in enumerate(text.splitlines(), 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        head, rest = words[0], words[1:]
        if head == "host" and rest:
            kv = _kv(rest[1:], number)
            decl = HostDecl(rest[0], int(kv.pop("memory", "8192")),
                            _flag(kv, "fencer", True, number),
                            _flag(kv, "watchdog", False, number),
                            _flag(kv, "fence-command", False, number))
            _unused(kv, number)
            hosts.append(decl)
        elif head == "vm" and len(rest) >= 3 and rest[1] == "on":
            stopped = "stopped" in rest[3:]
            kv = _kv([w for w in rest[3:] if w != "stopped"], number)
            vms.append(VMDecl(rest[0], rest[2], int(kv.pop("priority", "0")),
                              int(kv.pop("memory", "1024")), stopped))
            _unused(kv, number)
        elif head == "supervisor" and len(rest) == 1:
            supervisors.append(rest[0])
        elif head == "option":
            kv = _kv(rest, number)
            disk_locks = _flag(kv, "disk-locks", False, number)
            _unused(kv, number)
        elif head == "at" and len(rest) >= 2:
            verb, args = rest[1], rest[2:]
            if verb not in _EVENTS:
                raise ScriptError(f"line {number}: unknown event {verb!r}")
            count, allowed = _EVENTS[verb]
            if len(args) != count or (allowed is not None and args[-1] not in allowed):
                raise ScriptError(f"line {number}: cannot read {' '.join(rest[1:])!r}")
            if verb == "supervisor" and args[1] != "stall":
                raise ScriptError(f"line {number}: supervisor S stall SECONDS")
            events.append(Event(int(rest[0]), (verb, *args)))
        elif head == "end" and len(rest) == 1:
            end = int(rest[0])
        else:
            raise ScriptError(f"line {number}: cannot read {raw.strip()!r}")
    if end is None:
        raise ScriptError("the script has no `end T` line")
    if not supervisors:
        raise ScriptError("the script declares no supervisor")
    names = {h.name for h in hosts}
    for vm in vms:
        if vm.host not in names:
            raise ScriptError(f"vm {vm.name} is on {vm.host}, which is not declared")
    return Script(tuple(hosts), tuple(vms), tuple(supervisors),
                  tuple(sorted(events, key=lambda e: e.at)), end, disk_locks)
