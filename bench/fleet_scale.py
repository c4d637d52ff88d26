"""One server for many hosts (issue 17's 500): the part of ``bench/fleet.py`` that runs a
``virtlife serve`` over the whole light lab.

In one run, with the server up and its cache filled:

* the served ``virtlife list --all`` (the CLI over the server's local socket, its table
  piped) against the sequential ``virsh -c URI list --all`` loop over the same hosts, in
  turns (median of ``rounds``, at most 3: the loop takes ~40 ms a host);
* state changes on random hosts reaching ``/api/events``: on a host with QEMU domains,
  ``virsh resume``/``suspend`` of its paused domain; on any other, ``virsh define`` of a
  new domain and then ``virsh undefine``; each timed from just before virsh is launched
  to the arrival of the VM's ``state`` message with the new state (and of the raw
  ``event`` message) on a stream opened before;
* the server process's threads (sampled every 0.2 s over the whole run, and at the
  end) and its resident memory (VmRSS, VmHWM of /proc/PID/status).

Asserts nothing; ``report`` prints and records the figures.
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from serving import VIRTLIFE, EventFollower, Message, Sampler, Served, proc_status

from virtlife.lab import light

SERVED_RATIO = 50.0  # the served listing at least this many times the virsh loop
EVENT_MEDIAN_S = 0.5
THREADS_MAX = 64
CHANGE_TIMEOUT_S = 10.0
EXTRA_VM = "vl-bench-ev"


@dataclass
class Change:
    host: str
    action: str  # the virsh command
    state_s: float | None  # to the ``state`` message; None: none within the timeout
    event_s: float | None  # to the raw ``event`` message


@dataclass
class ScaleResult:
    hosts: int
    vms: int
    rounds: int
    virsh_s: float = 0.0
    served_s: float = 0.0
    warmup_s: float = 0.0
    changes: list[Change] = field(default_factory=list)
    threads_max: int = 0
    threads_end: int = 0
    rss_kib: int = 0
    hwm_kib: int = 0
    light_memory: dict[str, int] = field(default_factory=dict)
    stream_error: str | None = None
    rows_seen: list[int] = field(default_factory=list)  # VMs each served listing showed
    list_notes: list[str] = field(default_factory=list)  # what an incomplete one said


def served_rows(home: Path) -> tuple[int, str]:
    """``virtlife list --all`` as an operator types it (piped: the table): its VM rows,
    and the last line it wrote to stderr (an unreachable host is said there)."""
    done = subprocess.run([VIRTLIFE, "list", "--all"], capture_output=True, text=True,
                          env={**os.environ, "VIRTLIFE_HOME": str(home)},
                          stdin=subprocess.DEVNULL, check=False)
    lines = done.stdout.splitlines()
    if done.returncode != 0 or not lines or lines[0].split()[:2] != ["HOST", "NAME"]:
        raise RuntimeError(f"virtlife list failed ({done.returncode}): {done.stderr[-500:]}")
    errors = done.stderr.strip().splitlines()
    return len(lines) - 1, f"exit {done.returncode}: {errors[-1][:300] if errors else ''}"


def _extra_xml(folder: Path) -> Path:
    path = folder / f"{EXTRA_VM}.xml"
    path.write_text(f"<domain type='qemu'><name>{EXTRA_VM}</name><uuid>{uuid.uuid4()}</uuid>"
                    "<memory unit='MiB'>32</memory><vcpu>1</vcpu>"
                    "<os><type arch='x86_64' machine='pc'>hvm</type></os>"
                    "<devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices>"
                    "</domain>\n")
    return path


def _time_change(follower: EventFollower, host: light.LightHost, args: list[str], vm: str,
                 state: str) -> Change:
    """Run ``virsh ARGS`` on ``host``; the times until ``vm`` is seen in ``state``."""
    raw: list[float] = []

    def arrived(message: Message) -> bool:
        if message.get("host") != host.name:
            return False
        if message.get("type") == "event" and message.get("vm") == vm and not raw:
            raw.append(at_now())
        return (message.get("type") == "state" and message.get("name") == vm
                and message.get("state") == state)

    def at_now() -> float:
        return time.perf_counter()

    follower.drain()
    t0 = time.perf_counter()
    subprocess.run(["virsh", "-c", host.uri, *args], check=True, capture_output=True,
                   stdin=subprocess.DEVNULL)
    got = follower.wait_for(arrived, CHANGE_TIMEOUT_S)
    return Change(host.name, " ".join(args[:1]), None if got is None else got[0] - t0,
                  raw[0] - t0 if raw else None)


def _changes(follower: EventFollower, hosts: list[light.LightHost], count: int,
             folder: Path) -> list[Change]:
    rng = random.Random(17)
    xml = _extra_xml(folder)
    paused = {h.name: True for h in hosts if h.full}  # vm01 of each full host is paused
    done: list[Change] = []
    while len(done) < count:
        host = rng.choice(hosts)
        if host.full:
            verb, state = ("resume", "running") if paused[host.name] else ("suspend", "paused")
            done.append(_time_change(follower, host, [verb, light.PAUSED], light.PAUSED,
                                     state))
            paused[host.name] = not paused[host.name]
        else:
            done.append(_time_change(follower, host, ["define", str(xml)], EXTRA_VM,
                                     "shutoff"))
            done.append(_time_change(follower, host, ["undefine", EXTRA_VM], EXTRA_VM,
                                     "undefined"))
    return done


def run(home: Path, hosts: list[light.LightHost], vms: int, rounds: int, changes: int, *,
        virsh_loop: Callable[[list[light.LightHost]], None],
        light_memory: dict[str, int]) -> ScaleResult:
    """The one-server figures over ``hosts`` (inventory ``home``), as the module says."""
    result = ScaleResult(len(hosts), vms, min(rounds, 3), light_memory=light_memory)
    expect = len(hosts) * vms
    server = Served(home)
    sampler: Sampler | None = None
    follower: EventFollower | None = None
    try:
        server.start()
        sampler = Sampler(server.pid)
        result.warmup_s = server.wait_cached(len(hosts), max(300.0, 2.0 * len(hosts)))
        print(f"  server over {len(hosts)} hosts: listed from its cache after "
              f"{result.warmup_s:.1f} s")

        def served_list() -> None:
            rows, note = served_rows(home)
            result.rows_seen.append(rows)
            if rows != expect and note:
                result.list_notes.append(note)

        served_list()  # once untimed, as the rounds: its rows are counted
        base, served = [], []
        for _ in range(result.rounds):
            t0 = time.perf_counter()
            virsh_loop(hosts)
            base.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            served_list()
            served.append(time.perf_counter() - t0)
        result.virsh_s, result.served_s = statistics.median(base), statistics.median(served)
        print(f"  virsh loop {result.virsh_s:.2f} s, served list {result.served_s:.3f} s")
        follower = EventFollower(server.base, server.token)
        follower.start()
        if not follower.hello.wait(60):
            raise RuntimeError(f"no hello on /api/events within 60 s: {follower.error}")
        with tempfile.TemporaryDirectory(prefix="vl-bench-scale-") as tmp:
            result.changes = _changes(follower, hosts, changes, Path(tmp))
        result.stream_error = follower.error
        status = proc_status(server.pid)
        result.threads_end, result.rss_kib = status["Threads"], status["VmRSS"]
        result.hwm_kib = status["VmHWM"]
    finally:
        if follower is not None:
            follower.stop.set()
        if sampler is not None:
            sampler.stop()
            result.threads_max = sampler.max_threads
        server.stop()
    return result


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(r: ScaleResult) -> None:
    """Print the figures and record them in bench/RESULTS.md (bench/results.py)."""
    state = [c.state_s for c in r.changes if c.state_s is not None]
    raw = [c.event_s for c in r.changes if c.event_s is not None]
    missed = sum(c.state_s is None for c in r.changes)
    ratio = r.virsh_s / r.served_s
    expect = r.hosts * r.vms
    complete = all(n == expect for n in r.rows_seen)
    median = statistics.median(state) if state else float("nan")
    rows: list[dict[str, object]] = [{
        "hosts": r.hosts, "VMs": r.hosts * r.vms, "virsh loop s": r.virsh_s,
        "served list s": r.served_s, "ratio": ratio,
        "served rows (fewest)": min(r.rows_seen) if r.rows_seen else 0,
        "state msg median s": median, "state msg p99 s": _quantile(state, 0.99),
        "event msg median s": statistics.median(raw) if raw else float("nan"),
        "changes": len(r.changes), "no state msg": missed,
        "threads max": r.threads_max, "threads end": r.threads_end,
        "server RSS MiB": r.rss_kib / 1024, "server peak RSS MiB": r.hwm_kib / 1024}]
    by_action: dict[str, list[float]] = {}
    for c in r.changes:
        if c.state_s is not None:
            by_action.setdefault(c.action, []).append(c.state_s)
    targets = [
        (f"served list --all, {r.hosts} hosts x {r.vms} VMs: >= {SERVED_RATIO:g}x the "
         "virsh loop, every VM listed", ratio, SERVED_RATIO,
         ratio >= SERVED_RATIO and complete),
        (f"state change on a random host -> /api/events, median s ({r.hosts} hosts)",
         median, EVENT_MEDIAN_S, median <= EVENT_MEDIAN_S and missed == 0),
        (f"server threads, {r.hosts} hosts (most seen)", float(r.threads_max),
         float(THREADS_MAX), r.threads_max <= THREADS_MAX),
    ]
    lab = ", ".join(f"{c} {k / 1024:.0f} MiB" for c, k in sorted(r.light_memory.items()))
    notes = (
        f"One `virtlife serve` over {r.hosts} light hosts x {r.vms} VMs (light lab "
        f"resident memory: {lab}); it listed all from its cache {r.warmup_s:.1f} s after "
        f"it answered /api/health. List: `virtlife list --all` over the server's local "
        f"socket, table piped, against `virsh -c URI list --all` host after host, in "
        f"turns, median of {r.rounds}. Events: {len(r.changes)} changes on random hosts "
        "(seed 17), each timed from just before virsh is launched (virsh's own ~30-60 ms "
        "included) to the VM's `state` message with the new state on an open "
        "/api/events stream (`event msg`: the raw libvirt event's message); by action, "
        "median s: " + ", ".join(f"{a} {statistics.median(v):.3f} (n={len(v)})"
                                for a, v in sorted(by_action.items()))
        + f"; p99 is the largest of {len(state)} here. Threads sampled every 0.2 s from "
        "the server's start to the end; memory from /proc/PID/status at the end."
        + (f" The stream failed: {r.stream_error}." if r.stream_error else "")
        + ("" if complete else
           f" Served listings' rows, of {expect}: {r.rows_seen} (the first untimed); "
           "an incomplete one said: " + " | ".join(dict.fromkeys(r.list_notes))[:600]))
    print(f"\none server for {r.hosts} hosts x {r.vms} VMs")
    for key, value in rows[0].items():
        print(f"  {key}: {value:.3f}" if isinstance(value, float) else f"  {key}: {value}")
    try:
        from results import record
    except ImportError:
        return
    record(f"One server for {r.hosts} hosts", rows, targets, notes=notes)
