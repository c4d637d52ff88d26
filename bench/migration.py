"""Migration benchmark: one guest dirtying memory under a bandwidth cap, moved four ways.

In one run, on a two-host lab it brings up (``virtlife lab up 2``), a fresh test guest
of 256 MiB per way, created on lab-a and moved to lab-b:

* ``virsh --live``: plain pre-copy (aborted with ``virsh domjobabort`` after 60 s);
* ``virsh --live --auto-converge``: QEMU's vCPU throttling alone (aborted after 180 s);
* ``virtlife auto``: ``virtlife migrate`` with its convergence policy (the default),
  ``--max-downtime 50`` as the bound, ``--timeout 60 --on-timeout abort``;
* ``virtlife idle``: the same on a guest that does not dirty memory.

The three dirty guests rewrite 64 MiB in a loop (``lab create --dirty 64``); every
way is capped at 64 MiB/s. For each way it prints whether it converged, the job's total
time (libvirt's ``time_elapsed``), the downtime, the memory sent, and the total over the
physical floor: memory to move / bandwidth. The memory to move is what the idle guest's
migration sent (its non-zero pages, measured in this run), plus, for a dirty guest, the
dirtier's two 64 MiB tmpfs files of random data. The downtime is given three ways: the
completed job's statistics, the guest's pause by QEMU's own STOP and RESUME event
timestamps (what the targets use: libvirt's figure for post-copy runs until the last
page arrived, the guest running meanwhile), and QEMU's own. Then the issue's targets,
each met or not met. Timings are reported, never asserted: the exit code is 1 only when something
broke (the lab, a guest, a VM lost or crashed), 130 when interrupted.

    .venv/bin/python bench/migration.py

Needs root and the real stack (``make setup``); takes a few minutes. The lab is one per
machine: the bench holds the same claim as the lab tests (an abstract Unix socket), and
waits, bounded, for a lab that another process brought up to go away. Whatever it made
is removed at the end, also on Ctrl-C or SIGTERM: its VMs on both hosts, their disks,
and the lab it brought up.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from common import prepare
from results import record

from virtlife.hypervisor.libvirt_api import ensure_event_loop, libvirt, libvirt_qemu
from virtlife.lab import cluster

MIB = 1024 * 1024
MEMORY_MIB = 256  # the guest, as in RECIPE.md
DIRTY_MIB = 64  # the dirtier's working set
CAP_MIB_S = 64  # the bandwidth cap of every way
BOUND_MS = 50  # virtlife's --max-downtime: the configured bound
PLAIN_LIMIT_S = 60  # plain pre-copy (and virtlife) must converge within this
AUTO_CONVERGE_LIMIT_S = 180  # auto-converge alone took 33.5 s in RECIPE.md
LAB_WAIT_S = 900  # how long to wait for another process's lab to go away
CLAIM = b"\0virtlife-lab-tests"  # the lab tests' claim (tests/lab_support.py)
SRC, DST = "lab-a", "lab-b"
VIRTLIFE = str(Path(sys.executable).with_name("virtlife"))
PID = os.getpid()

# targets from the issue
TARGET_FLOOR_RATIO = 1.5
TARGET_VS_AUTO_CONVERGE = 0.3
TARGET_DOWNTIME_MS = 50


class Broken(Exception):
    """Something the benchmark needs failed (not a slow number): exit 1."""


@dataclass
class Run:
    way: str
    vm: str
    dirty: bool
    converged: bool = False
    total_s: float | None = None  # the job's time_elapsed
    wall_s: float | None = None  # the command, as its user waited for it
    downtime_ms: int | None = None  # the completed job's (libvirt: stop to resume)
    paused_ms: int | None = None  # QEMU's STOP at the source to its RESUME at the destination
    qemu_downtime_ms: int | None = None  # QEMU's own, in the source's JOB_COMPLETED event
    sent_bytes: int | None = None
    stats_from: str = "-"
    note: str = ""
    limit_s: float | None = None  # aborted when not converged by then
    steps: list[dict[str, Any]] = field(default_factory=list)  # virtlife's policy steps
    floor_s: float | None = None
    guest_problem: str = ""  # the guest after its move: agent silent, dirtier stopped

    @property
    def ratio(self) -> float | None:
        if self.total_s is None or not self.floor_s:
            return None
        return self.total_s / self.floor_s


class Bench:
    """The lab, the connections to its hosts, and every VM made (for the cleanup)."""

    def __init__(self, home: Path) -> None:
        self.env = {**os.environ, "VIRTLIFE_HOME": str(home)}
        self.uri: dict[str, str] = {}
        self.pool_dir: Path | None = None
        self.lab_ours = False
        self.conns: dict[str, Any] = {}
        self.made: list[str] = []
        self.completed: dict[str, dict[str, Any]] = {}  # the source's JOB_COMPLETED
        self.qmp: dict[str, list[tuple[float, str, str]]] = {}  # QEMU's STOP and RESUME
        self.child: subprocess.Popen[str] | None = None

    # -- commands ------------------------------------------------------------------

    def virtlife(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run([VIRTLIFE, *args], capture_output=True, text=True,
                              env=self.env, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)

    def virsh(self, host: str, *args: str,
              timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["virsh", "-q", "-c", self.uri[host], *args],
                              capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)

    # -- the lab -------------------------------------------------------------------

    def lab_up(self) -> None:
        wait_for_other_lab()
        run = self.virtlife("lab", "up", "2", "--owner-pid", str(PID), "--json",
                            timeout=300)
        if run.returncode != 0:
            raise Broken(f"virtlife lab up 2 failed (exit {run.returncode}): "
                         f"{run.stderr.strip() or run.stdout.strip()}")
        self.lab_ours = True
        data = json.loads(run.stdout)
        self.uri = {h["name"]: h["uri"] for h in data["hosts"]}
        self.pool_dir = Path(data["pool"]["path"])
        for note in data.get("notes", []):
            print(f"  lab: {note}")
        ensure_event_loop()
        for name in (SRC, DST):
            conn = libvirt.open(self.uri[name])
            conn.setKeepAlive(5, 3)
            for event in ("STOP", "RESUME"):
                libvirt_qemu.qemuMonitorEventRegister(conn, None, event, self._qmp, name)
            self.conns[name] = conn
        self.conns[SRC].domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, self._job_completed, None)

    def _job_completed(self, _conn: Any, dom: Any, params: dict[str, Any],
                       _opaque: object) -> None:
        self.completed[dom.name()] = dict(params)  # the event thread: store, no call

    def _qmp(self, _conn: Any, dom: Any, event: str, seconds: int, micros: int,
             _details: str | None, host: str) -> None:
        self.qmp.setdefault(dom.name(), []).append((seconds + micros / 1e6, host, event))

    def paused_ms(self, name: str) -> int | None:
        """How long the guest's vCPUs did not run: from QEMU's STOP event at the source
        to QEMU's RESUME at the destination, by QEMU's own timestamps (one clock: the
        lab's hosts are this machine)."""
        seen = self.qmp.get(name, [])
        stops = [t for t, host, ev in seen if host == SRC and ev == "STOP"]
        if not stops:
            return None
        runs = [t for t, host, ev in seen if host == DST and ev == "RESUME"
                and t >= stops[-1]]
        return round((min(runs) - stops[-1]) * 1000) if runs else None

    def lab_down(self) -> None:
        for conn in self.conns.values():
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()
        self.conns.clear()
        found = cluster.status()
        if not self.lab_ours or found is None:
            return
        owner = found.record.owner
        if found.state != "stale" and (owner is None or owner.pid != PID):
            print("  the lab up now is not this bench's: left alone")
            return
        run = self.virtlife("lab", "down", timeout=300)
        if run.returncode != 0:
            raise Broken(f"virtlife lab down failed: {run.stderr.strip()}")
        self.lab_ours = False

    # -- guests --------------------------------------------------------------------

    def create(self, run: Run) -> None:
        self.made.append(run.vm)
        dirty = ["--dirty", str(DIRTY_MIB)] if run.dirty else []
        done = self.virtlife("lab", "create", run.vm, "--host", SRC, "--memory",
                             str(MEMORY_MIB), *dirty, "--start", "--wait-agent", "--json")
        if done.returncode != 0:
            raise Broken(f"cannot create {run.vm}: {done.stderr.strip()}")
        if run.dirty:  # steady state: the dirtier has made some passes
            dom = self.conns[SRC].lookupByName(run.vm)
            deadline = time.monotonic() + 60
            while (count := dirty_count(dom)) is None or count < 10:
                if time.monotonic() > deadline:
                    raise Broken(f"the dirtier of {run.vm} did not run within 60 s "
                                 f"(passes: {count})")
                time.sleep(0.5)

    def remove(self, name: str) -> list[str]:
        """Destroy and undefine ``name`` on both hosts and delete its disk; what failed."""
        problems: list[str] = []
        for host in (SRC, DST):
            if host not in self.uri:
                continue
            self.virsh(host, "domjobabort", name, timeout=30)
            if self.virsh(host, "dominfo", name, timeout=30).returncode != 0:
                continue
            self.virsh(host, "destroy", name, timeout=60)
            gone = self.virsh(host, "undefine", name, "--managed-save",
                              "--snapshots-metadata", timeout=30)
            if gone.returncode != 0 and self.virsh(host, "dominfo", name).returncode == 0:
                problems.append(f"{name} on {host}: {gone.stderr.strip()}")
        if self.pool_dir is not None:
            try:
                (self.pool_dir / f"{name}.qcow2").unlink(missing_ok=True)
            except OSError as err:
                problems.append(f"{name}'s disk: {err}")
        return problems

    def lookup(self, host: str, name: str) -> Any | None:
        try:
            return self.conns[host].lookupByName(name)
        except libvirt.libvirtError:
            return None

    def check_guest(self, run: Run) -> None:
        """The guest after its move: where it should be (lab-b if it converged, else
        lab-a), else Broken (a VM lost); running, its agent answering and the dirtier
        still going, else ``run.guest_problem`` (the other ways still run; the exit code
        is 1 when virtlife's own move broke its guest)."""
        here, other = (DST, SRC) if run.converged else (SRC, DST)
        dom = self.lookup(here, run.vm)
        if dom is None:
            left = self.lookup(other, run.vm)
            where = f"it is on {other}" if left is not None else "it is on neither host"
            raise Broken(f"{run.way}: {run.vm} is not on {here}: {where} (VM lost?)")
        state, reason = dom.state()
        if state != libvirt.VIR_DOMAIN_RUNNING:  # e.g. crashed (6/1): a broken guest
            run.guest_problem = (f"{run.vm} on {here} is in state {state}/{reason} "
                                 "(libvirt's numbers), not running")
            return
        before = None
        deadline = time.monotonic() + 30
        while (before := dirty_count(dom)) is None and time.monotonic() < deadline:
            time.sleep(0.5)
        if before is None:
            run.guest_problem = f"the agent of {run.vm} on {here} does not answer"
            return
        if run.dirty:  # a pass can take seconds right after a move (TCG, cold caches)
            after: int | None = before
            deadline = time.monotonic() + 30
            while (after is None or after <= before) and time.monotonic() < deadline:
                time.sleep(1.0)
                after = dirty_count(dom)
            if after is None or after <= before:
                seen = guest_sh(dom, "cat /proc/uptime /proc/loadavg; for p in "
                                "/proc/[0-9]*; do read -r a c s r < $p/stat && case $c in "
                                "'(dd)'|'(dirty)'|'(mv)') echo $a $c $s;; esac; done")
                run.guest_problem = (f"the dirtier of {run.vm} on {here} stopped: {before} "
                                     f"passes, then {after} 30 s later; in the guest: "
                                     + " | ".join((seen or "?").split("\n")))

    def source_stats(self, name: str) -> dict[str, Any] | None:
        """The completed (or cancelled) job's statistics at the source, kept there."""
        dom = self.lookup(SRC, name)
        if dom is None:
            return None
        try:
            stats = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED
                                 | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED)
        except libvirt.libvirtError:
            return None
        return dict(stats) if stats and stats.get("time_elapsed") else None

    def completed_stats(self, name: str) -> tuple[dict[str, Any] | None, str]:
        """The moved VM's completed job: at the destination (``virsh domjobinfo
        --completed``), else the source's JOB_COMPLETED event (after post-copy the
        destination has none)."""
        dom = self.lookup(DST, name)
        if dom is not None:
            with contextlib.suppress(libvirt.libvirtError):
                stats = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED
                                     | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED)
                if stats and stats.get("time_elapsed"):
                    return dict(stats), "dest domjobinfo"
        deadline = time.monotonic() + 5
        while name not in self.completed and time.monotonic() < deadline:
            time.sleep(0.1)
        if name in self.completed:
            return self.completed[name], "source event"
        return None, "-"

    # -- the ways ------------------------------------------------------------------

    def run_virsh(self, run: Run, auto_converge: bool) -> None:
        assert run.limit_s is not None
        cmd = ["virsh", "-c", self.uri[SRC], "migrate", "--live", "--p2p", "--persistent",
               "--undefinesource", "--unsafe", *(["--auto-converge"] if auto_converge else []),
               "--bandwidth", str(CAP_MIB_S), run.vm, self.uri[DST]]
        dom = self.conns[SRC].lookupByName(run.vm)
        last: dict[str, Any] = {}
        aborted = False
        t0 = time.monotonic()
        self.child = proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, text=True,
                                             stdin=subprocess.DEVNULL)
        try:
            while proc.poll() is None:
                with contextlib.suppress(libvirt.libvirtError):
                    stats = dom.jobStats()
                    if stats.get("time_elapsed"):
                        last = dict(stats)
                took = time.monotonic() - t0
                if took > run.limit_s and not aborted:
                    self.virsh(SRC, "domjobabort", run.vm, timeout=30)
                    aborted = True
                if took > run.limit_s + 90:
                    proc.kill()
                    raise Broken(f"virsh migrate of {run.vm} did not end 90 s after "
                                 "domjobabort")
                time.sleep(0.5)
            _out, err = proc.communicate(timeout=30)
        finally:
            self.child = None
        run.wall_s = time.monotonic() - t0
        run.converged = proc.returncode == 0
        if run.converged:
            stats, run.stats_from = self.completed_stats(run.vm)
            self.take_events(run)
        else:
            run.note = (f"aborted at {run.limit_s:.0f} s" if aborted
                        else f"failed: {err.strip()}")
            stats, run.stats_from = self.source_stats(run.vm), "source domjobinfo"
            if stats is None and last:
                stats, run.stats_from = last, "last sample"
        take_libvirt_stats(run, stats)

    def run_virtlife(self, run: Run) -> None:
        cmd = [VIRTLIFE, "migrate", run.vm, DST, "--bandwidth", str(CAP_MIB_S),
               "--max-downtime", str(BOUND_MS), "--timeout", str(PLAIN_LIMIT_S),
               "--on-timeout", "abort", "--json"]
        t0 = time.monotonic()
        self.child = proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, text=True, env=self.env,
                                             stdin=subprocess.DEVNULL)
        try:
            out, err = proc.communicate(timeout=PLAIN_LIMIT_S + 180)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            raise Broken(f"virtlife migrate {run.vm} did not end within "
                         f"{PLAIN_LIMIT_S + 180} s") from exc
        finally:
            self.child = None
        run.wall_s = time.monotonic() - t0
        outcome = next((d for d in json_documents(out) if "checks" in d), None)
        run.converged = proc.returncode == 0 and self.lookup(DST, run.vm) is not None
        if not run.converged:
            last = (err.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
            run.note = f"exit {proc.returncode}: {last}"
        if outcome is not None and isinstance(outcome.get("policy"), dict):
            run.steps = list(outcome["policy"].get("steps") or [])
        own = outcome.get("stats") if outcome is not None else None
        if run.converged and isinstance(own, dict) and own.get("job_elapsed_ms"):
            run.stats_from = "virtlife stats"
            run.total_s = own["job_elapsed_ms"] / 1000
            run.downtime_ms = own.get("downtime_ms")
            run.sent_bytes = own.get("memory_processed")
            self.take_events(run)
            return
        if run.converged:
            stats, run.stats_from = self.completed_stats(run.vm)
            self.take_events(run)
        else:
            stats, run.stats_from = self.source_stats(run.vm), "source domjobinfo"
        take_libvirt_stats(run, stats)

    def take_events(self, run: Run) -> None:
        """The pause as QEMU's events tell it, and QEMU's own downtime (the source's
        JOB_COMPLETED event), beside the job statistics' downtime."""
        deadline = time.monotonic() + 5
        while (run.vm not in self.completed or self.paused_ms(run.vm) is None) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        qemu = self.completed.get(run.vm, {}).get("downtime")
        run.qemu_downtime_ms = None if qemu is None else int(qemu)
        run.paused_ms = self.paused_ms(run.vm)

    def stop_child(self) -> None:
        proc = self.child
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# --------------------------------------------------------------------------- helpers


def take_libvirt_stats(run: Run, stats: dict[str, Any] | None) -> None:
    if not stats:
        return
    if stats.get("time_elapsed") is not None:
        run.total_s = stats["time_elapsed"] / 1000
    if run.converged and stats.get("downtime") is not None:
        run.downtime_ms = int(stats["downtime"])
    if stats.get("memory_processed") is not None:
        run.sent_bytes = int(stats["memory_processed"])


def json_documents(text: str) -> Iterator[dict[str, Any]]:
    """Every JSON object in ``text``: one per line or indented, one after another."""
    decoder = json.JSONDecoder()
    i = 0
    while True:
        i = text.find("{", i)
        if i < 0:
            return
        try:
            doc, end = decoder.raw_decode(text, i)
        except ValueError:
            i += 1
            continue
        if isinstance(doc, dict):
            yield doc
        i = end


def agent(dom: Any, command: str, arguments: dict[str, Any] | None = None) -> Any:
    cmd: dict[str, Any] = {"execute": command}
    if arguments is not None:
        cmd["arguments"] = arguments
    return json.loads(libvirt_qemu.qemuAgentCommand(dom, json.dumps(cmd), 5, 0))["return"]


def guest_sh(dom: Any, script: str) -> str | None:
    """What ``sh -c script`` prints in the guest (through the agent); None if the agent
    does not answer within about 5 s."""
    try:
        pid = agent(dom, "guest-exec", {"path": "/bin/sh", "capture-output": True,
                                        "arg": ["-c", script]})
        for _ in range(50):
            st = agent(dom, "guest-exec-status", {"pid": pid["pid"]})
            if st.get("exited"):
                return base64.b64decode(st.get("out-data", "")).decode().strip()
            time.sleep(0.1)
    except (libvirt.libvirtError, KeyError, ValueError):
        return None
    return None


def dirty_count(dom: Any) -> int | None:
    """The dirtier's passes so far (0 for an idle guest); None if the agent does not
    answer."""
    text = guest_sh(dom, "cat /run/dirty.count 2>/dev/null")
    if text is None:
        return None
    return int(text) if text.isdigit() else 0


@contextlib.contextmanager
def claim_lab() -> Iterator[None]:
    """Hold the machine's lab as the lab tests do; wait (bounded) while another holds it."""
    deadline = time.monotonic() + LAB_WAIT_S
    said = False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as claim:
        while True:
            try:
                claim.bind(CLAIM)
                break
            except OSError as err:
                if err.errno != errno.EADDRINUSE:
                    raise
                if time.monotonic() > deadline:
                    raise Broken(f"another process held the lab for more than "
                                 f"{LAB_WAIT_S} s") from err
                if not said:
                    print("waiting: another process (a lab test?) holds the lab")
                    said = True
                time.sleep(2.0)
        yield


def wait_for_other_lab() -> None:
    """Return once no live lab is up (a stale one is cleaned up by ``lab up``)."""
    deadline = time.monotonic() + LAB_WAIT_S
    said = False
    while True:
        found = cluster.status()
        if found is None or found.state == "stale":
            return
        owner = found.record.owner
        whose = f"pid {owner.pid}'s" if owner is not None else "a hand-started"
        if time.monotonic() > deadline:
            raise Broken(f"{whose} lab was still up after {LAB_WAIT_S} s"
                         + ("; take it down with `virtlife lab down`" if owner is None
                            else ""))
        if not said:
            print(f"waiting: {whose} lab is up ({found.state})")
            said = True
        time.sleep(2.0)


def _fmt(value: float | None, spec: str) -> str:
    """``value`` in ``spec`` (e.g. ``8.1f``), or ``-`` as wide."""
    width = int(spec.split(".")[0].rstrip("df") or 0)
    return f"{'-':>{width}}" if value is None else format(value, spec)


def report(runs: dict[str, Run], idle_sent: float | None) -> None:
    print()
    if idle_sent is not None:
        dirty_move = idle_sent + 2 * DIRTY_MIB
        print(f"floor: memory to move / {CAP_MIB_S} MiB/s; idle guest {idle_sent:.0f} MiB "
              f"(what its migration sent) -> {idle_sent / CAP_MIB_S:.2f} s; dirty guest "
              f"{idle_sent:.0f} + 2 x {DIRTY_MIB} MiB -> {dirty_move / CAP_MIB_S:.2f} s")
    else:
        print("floor: unknown (the idle run gave no memory sent)")
    head = (f"{'way':<30} {'converged':<22} {'total s':>8} {'wall s':>7} "
            f"{'downtime ms':>11} {'paused ms':>9} {'qemu dt ms':>10} "
            f"{'memory sent MiB':>15} {'total/floor':>11}  stats from")
    print(head)
    print("-" * len(head))
    for r in runs.values():
        conv = "yes" if r.converged else f"no, {r.note}" if len(r.note) < 19 else \
            "no (see below)"
        sent = None if r.sent_bytes is None else r.sent_bytes / MIB
        print(f"{r.way:<30} {conv[:22]:<22} {_fmt(r.total_s, '8.1f')} "
              f"{_fmt(r.wall_s, '7.1f')} {_fmt(r.downtime_ms, '11d')} "
              f"{_fmt(r.paused_ms, '9d')} {_fmt(r.qemu_downtime_ms, '10d')} "
              f"{_fmt(sent, '15.0f')} {_fmt(r.ratio, '10.2f')}{'x' if r.ratio else ' '}  "
              f"{r.stats_from}")
    for r in runs.values():
        if len(r.note) >= 19:
            print(f"  {r.way}: {r.note}")
        if r.guest_problem:
            print(f"  {r.way}: GUEST BROKEN after the move: {r.guest_problem}")
        if r.steps:
            steps = "; ".join(f"{s.get('at_s')} s {s.get('action')}"
                              + (f" {s['value']} ms" if s.get("value") else "")
                              for s in r.steps)
            print(f"  {r.way} policy steps: {steps}")
    print("  total: the job's time_elapsed (QEMU's transfer, libvirt's phases); wall: the "
          "command (virtlife's also runs its checks\n  and verifies the guest at lab-b); "
          "downtime: the completed job's, as libvirt gives it (in post-copy: from the stop "
          "at the\n  source until the last page arrived); paused: QEMU's STOP event at the "
          "source to its RESUME at the destination, by\n  QEMU's timestamps: what the guest "
          "felt; qemu dt: QEMU's own (the source's JOB_COMPLETED event; in post-copy until "
          "the\n  device state was sent)")


def targets(runs: dict[str, Run]) -> list[tuple[str, bool | None, str]]:
    plain, auto, ours, idle = (runs["plain"], runs["auto-converge"], runs["virtlife"],
                               runs["idle"])
    found: list[tuple[str, bool | None, str]] = []
    found.append((f"virtlife converges where plain pre-copy does not within "
                  f"{PLAIN_LIMIT_S} s",
                  ours.converged and not plain.converged,
                  f"plain: {'converged' if plain.converged else 'did not converge'}, "
                  f"virtlife: {'converged' if ours.converged else 'did not converge'}"))
    ratio = ours.ratio if ours.converged else None
    found.append((f"virtlife total within {TARGET_FLOOR_RATIO}x of the floor",
                  None if ratio is None else ratio <= TARGET_FLOOR_RATIO,
                  "-" if ratio is None else f"{ratio:.2f}x"))
    if ours.converged and ours.total_s is not None and auto.total_s is not None:
        vs = ours.total_s / auto.total_s
        # auto-converge not done by its limit: its true total is above the limit
        met = vs <= TARGET_VS_AUTO_CONVERGE
        words = f"{vs:.2f}x" + ("" if auto.converged else
                                f" (auto-converge stopped at {auto.total_s:.0f} s)")
        found.append((f"virtlife total <= {TARGET_VS_AUTO_CONVERGE}x of auto-converge "
                      "alone", met, words))
    else:
        found.append((f"virtlife total <= {TARGET_VS_AUTO_CONVERGE}x of auto-converge "
                      "alone", None, "no total to compare"))
    # downtime: the guest's pause (QEMU's STOP to RESUME), else the job statistics'
    dt = pause(ours) if ours.converged else None
    found.append((f"virtlife downtime <= {TARGET_DOWNTIME_MS} ms (the guest's pause)",
                  None if dt is None else dt <= TARGET_DOWNTIME_MS,
                  "-" if dt is None else f"{dt} ms" + (
                      f" (libvirt's job statistics: {ours.downtime_ms} ms)"
                      if ours.downtime_ms is not None and ours.downtime_ms != dt else "")))
    seen = [r for r in (ours, idle) if r.converged and pause(r) is not None]
    over = [f"{r.way} {pause(r)} ms" for r in seen if (pause(r) or 0) > BOUND_MS]
    over += [f"{r.way} raised to {s['value']} ms" for r in (ours, idle) for s in r.steps
             if s.get("value") is not None and s["value"] > BOUND_MS]
    found.append((f"virtlife downtime never above its bound ({BOUND_MS} ms)",
                  None if not seen else not over,
                  "; ".join(over) or ", ".join(f"{r.way} {pause(r)} ms" for r in seen)
                  or "no downtime read"))
    return found


def pause(run: Run) -> int | None:
    """The guest's pause: QEMU's STOP to RESUME, else the job statistics' downtime."""
    return run.paused_ms if run.paused_ms is not None else run.downtime_ms


def print_targets(found: list[tuple[str, bool | None, str]]) -> None:
    print("\ntargets:")
    for what, met, why in found:
        word = "met" if met else "not met" if met is not None else "unknown"
        print(f"  {word:<8} {what}: {why}")


# --------------------------------------------------------------------------- main


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    if prepare() is None:
        return 1
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    tag = f"vl-migbench-{PID}"
    runs = {
        "idle": Run("virtlife auto, idle guest", f"{tag}-idle", dirty=False),
        "plain": Run("virsh --live", f"{tag}-plain", dirty=True, limit_s=PLAIN_LIMIT_S),
        "auto-converge": Run("virsh --live --auto-converge", f"{tag}-ac", dirty=True,
                             limit_s=AUTO_CONVERGE_LIMIT_S),
        "virtlife": Run("virtlife auto (policy)", f"{tag}-vl", dirty=True),
    }
    order = ["idle", "plain", "auto-converge", "virtlife"]
    rc = 0
    t_start = time.monotonic()
    print(f"migration bench: {MEMORY_MIB} MiB guest, {DIRTY_MIB} MiB dirtied, "
          f"{CAP_MIB_S} MiB/s cap, {SRC} -> {DST}, virtlife --max-downtime {BOUND_MS}")
    with tempfile.TemporaryDirectory(prefix="vl-migbench-") as home:
        bench = Bench(Path(home))
        try:
            with claim_lab():
                try:
                    bench.lab_up()
                    for key in order:
                        r = runs[key]
                        print(f"{r.way}: creating {r.vm} on {SRC}", flush=True)
                        bench.create(r)
                        print(f"{r.way}: migrating to {DST}", flush=True)
                        if key == "plain":
                            bench.run_virsh(r, auto_converge=False)
                        elif key == "auto-converge":
                            bench.run_virsh(r, auto_converge=True)
                        else:
                            bench.run_virtlife(r)
                        print(f"{r.way}: {'converged' if r.converged else 'not converged'}"
                              f" in {_fmt(r.wall_s, '.1f')} s wall", flush=True)
                        bench.check_guest(r)
                        problems = bench.remove(r.vm)
                        if problems:
                            raise Broken("cannot remove " + "; ".join(problems))
                finally:
                    rc = max(rc, cleanup(bench))
        except Broken as err:
            print(f"bench broken: {err}", file=sys.stderr)
            rc = 1
        except KeyboardInterrupt:
            print("interrupted: cleaned up", file=sys.stderr)
            return 130
    idle = runs["idle"]
    idle_sent = None if idle.sent_bytes is None else idle.sent_bytes / MIB
    if idle_sent is not None:
        for r in runs.values():
            move = idle_sent + (2 * DIRTY_MIB if r.dirty else 0)
            r.floor_s = move / CAP_MIB_S
    order = [runs[k] for k in ("plain", "auto-converge", "virtlife", "idle")]
    report({k: runs[k] for k in ("plain", "auto-converge", "virtlife", "idle")}, idle_sent)
    found = targets(runs)
    print_targets(found)
    record_results(order, found)
    # a guest broken by virtlife's move fails the bench; one broken by a baseline's
    # (virsh's auto-converge has done it here) is reported above, not ours to fail on
    if any(r.guest_problem for r in (runs["virtlife"], runs["idle"])):
        rc = 1
    print(f"\nbench took {time.monotonic() - t_start:.0f} s")
    return rc


def record_results(order: list[Run], found: list[tuple[str, bool | None, str]]) -> None:
    """The table and the targets in bench/RESULTS.md (``results.record``); a target whose
    figure is unknown is left out of the pass/miss list and named in the notes."""
    rows: list[dict[str, object]] = [{
        "way": r.way, "converged": "yes" if r.converged else "no",
        "total s": r.total_s, "wall s": r.wall_s, "downtime ms": r.downtime_ms,
        "paused ms": r.paused_ms,
        "memory sent MiB": None if r.sent_bytes is None else round(r.sent_bytes / MIB),
        "total/floor": r.ratio, "guest after the move": r.guest_problem or "fine",
    } for r in order]
    rows = [{k: "-" if v is None else v for k, v in row.items()} for row in rows]
    met = [(what, why, "-", bool(ok)) for what, ok, why in found if ok is not None]
    unknown = [what for what, ok, _why in found if ok is None]
    record("Migration (a guest dirtying memory under a bandwidth cap)", rows,
           met,  # type: ignore[arg-type]  # the measured figure is a phrase here
           notes="unknown (no figure): " + "; ".join(unknown) if unknown else "")


def cleanup(bench: Bench) -> int:
    """Remove every VM the bench made and the lab it brought up; 1 if something stays.
    Signals wait meanwhile: an interrupted cleanup would leave the lab behind."""
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    rc = 0
    try:
        bench.stop_child()
        for name in bench.made:
            for problem in bench.remove(name):
                print(f"cleanup: {problem}", file=sys.stderr)
                rc = 1
        try:
            bench.lab_down()
        except (Broken, subprocess.TimeoutExpired) as err:
            print(f"cleanup: {err}", file=sys.stderr)
            rc = 1
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    return rc


if __name__ == "__main__":
    sys.exit(main())
