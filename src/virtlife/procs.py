"""Process identity on this machine, read from /proc: a pid plus its start time, so that
a later process reusing the pid is never taken for the one recorded.

Used by the journal (is the process that left a running row still alive?) and the lab
(which daemons did it start?). It only reads /proc; it signals and changes nothing.
"""

from __future__ import annotations

from pathlib import Path


def start_time(pid: int) -> int | None:
    """Clock ticks after boot at which live process ``pid`` started (field 22 of
    /proc/PID/stat); None when there is no such process, or only its zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the name may hold spaces and parens
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    try:
        return int(fields[19])
    except ValueError:
        return None


def comm(pid: int) -> str | None:
    """The command name of process ``pid`` (/proc/PID/comm); None when it has ended."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
