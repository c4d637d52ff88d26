"""Event latency benchmark: from a VM's end to `virtlife events` and to `virtlife serve`.

Three ways a VM ends, several rounds each: `virsh destroy`, QEMU killed (SIGKILL) and a
guest kernel panic (an NMI injected into a guest told to panic on one; the test guest's
panic device then reports it). For each, it measures the time from the trigger (just
before `virsh` is launched, the signal sent or the NMI injected) to:

- a running `virtlife events --json` printing the VM's lifecycle event (its new state:
  ``stopped``/``crashed`` with the reason), read from the process's stdout;
- a running `virtlife serve` sending the VM's ``state`` message on /api/events (the
  state read after the event, with the operations it allows).

Both observers are separate processes that run through all rounds, started once, as an
operator runs them; both see the same rounds. Target: the median of each ≤ 200 ms.
The VM and both processes are removed at the end, also on failure.

Where: libvirt reports a destroyed or killed domain only once its QEMU process is gone,
zombie included, and QEMU is an orphan (libvirtd daemonizes it): whatever reaps orphans
is in the destroy and SIGKILL rows. On a real host that is systemd, at once; the lab
starts libvirtd under virtlife's reaper (``virtlife.lab.reaper``), which does the same.
A system libvirtd left to a PID 1 that reaps late (a container's or microVM's init; it
was started before the reaper existed) would make those rows measure PID 1, so
``--on auto`` (the default) says so, with how to restart it, and measures on a private
lab host (``virtlife.lab.privhost``, its libvirtd under the reaper) instead;
``--on system`` measures the system libvirtd anyway, ``--on private`` the private host.

    .venv/bin/python bench/events.py [--rounds N] [--on auto|system|private]

Needs the real stack (root, libvirtd running, the test guest built; `make setup`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import URI, prepare, remove_vm
from results import record

from virtlife.hypervisor.libvirt_api import ensure_event_loop, libvirt
from virtlife.lab import hostprep, privhost
from virtlife.lab.spec import lab_guest_spec
from virtlife.services import provision
from virtlife.services.context import Services, open_services

VM = f"vl-bench-ev-{os.getpid()}"
HOST = "local"
TARGET_MS = 200.0
WAIT_S = 15.0  # how long a round waits for an observer before it counts as a miss
PROMPT_REAP_S = 0.05  # a PID 1 that reaps a killed orphan within this reaps "at once"
Message = dict[str, Any]
Stamped = tuple[float, Message]


def virtlife_cmd(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("virtlife")), *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Where:
    """The libvirtd the rounds run on, and what reaps the QEMUs it orphans."""

    label: str
    uri: str
    run_dir: Path  # its /run, as this process sees it (QEMU pid files)
    parent: hostprep.Parentage | None

    def qemu_pid(self) -> int:
        return int((self.run_dir / "libvirt" / "qemu" / f"{VM}.pid").read_text())

    def reaping(self, reap_s: float) -> str:
        """Who reaps its QEMUs, in words."""
        if self.parent is None:
            return "libvirtd's parent is unknown (no pid file)"
        if self.parent.parent == 1:
            return (f"libvirtd's parent is PID 1 ({self.parent.parent_comm}), which reaped "
                    f"a killed orphan after {reap_s * 1000:.0f} ms")
        return f"libvirtd: {self.parent.describe()}"


def pid1_bound(parent: hostprep.Parentage | None, reap_s: float) -> bool:
    """Whether QEMU's end waits for a PID 1 that reaps late (a destroy measured there
    measures PID 1)."""
    return (parent is not None and not parent.reaped and parent.parent == 1
            and reap_s > PROMPT_REAP_S)


def running_vms(uri: str) -> int:
    done = subprocess.run(["virsh", "-q", "-c", uri, "list", "--name"], capture_output=True,
                          text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
    return len(done.stdout.split())


def pid1_warning(parent: hostprep.Parentage, reap_s: float) -> str:
    pid_file = hostprep.LOCAL_DAEMONS.pid_file("libvirtd")
    return (f"the system libvirtd (pid {parent.pid}) runs without virtlife's reaper: its "
            f"parent is PID 1 ({parent.parent_comm}), which reaped a killed orphan after "
            f"{reap_s * 1000:.0f} ms. libvirt reports a destroyed or killed VM only once "
            "its QEMU is reaped, so there the destroy and SIGKILL rows measure PID 1. "
            f"To restart it under the reaper when no VM runs on it ({running_vms(URI)} "
            f"run now): kill $(cat {pid_file}); .venv/bin/virtlife lab setup")


@contextmanager
def libvirtd_for(on: str, reap_s: float) -> Iterator[Where]:
    """The libvirtd to measure (``--on``): the system's, or a private lab host's under
    the reaper, stopped at the end."""
    system = Where("the system libvirtd", URI, hostprep.LOCAL_DAEMONS.run_dir,
                   hostprep.parentage("libvirtd"))
    bound = pid1_bound(system.parent, reap_s)
    if bound and system.parent is not None:
        print(f"NOTE: {pid1_warning(system.parent, reap_s)}", flush=True)
    if on == "system" or (on == "auto" and not bound):
        yield system
        return
    if on == "auto":
        print("measuring on a private lab host, its libvirtd under virtlife's reaper, "
              "instead (--on system measures the system libvirtd anyway)", flush=True)
    state_dir = Path(tempfile.mkdtemp(prefix="vl-bench-", dir="/tmp"))
    try:
        host = privhost.start("bench-events", state_dir=state_dir, owner_pid=os.getpid())
        yield Where(f"private lab host {host.name}", host.uri, host.dir / "run",
                    hostprep.parentage("libvirtd", host.daemon_paths))
    finally:
        privhost.stop_all(state_dir)


class Observer:
    """Messages of one observer process, stamped (monotonic) as this process reads them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.messages: queue.Queue[Stamped] = queue.Queue()

    def put(self, message: Message) -> None:
        self.messages.put((time.monotonic(), message))

    def drain(self) -> None:
        while True:
            try:
                self.messages.get_nowait()
            except queue.Empty:
                return

    def wait_for(self, match: Callable[[Message], bool], timeout_s: float) -> float | None:
        """The stamp of the first message ``match`` takes; None if none within the time."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                stamp, message = self.messages.get(timeout=left)
            except queue.Empty:
                return None
            if match(message):
                return stamp


def follow_cli(proc: subprocess.Popen[str], observer: Observer) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        try:
            observer.put(json.loads(line))
        except json.JSONDecodeError:
            continue


def follow_sse(base: str, token: str, observer: Observer, stop: threading.Event) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=None) as client, \
                client.stream("GET", "/api/events") as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if stop.is_set():
                    return
                if line.startswith("data: "):
                    observer.put(json.loads(line[6:]))
    except httpx.HTTPError as err:
        if not stop.is_set():  # the server going away at the end is no news
            print(f"the event stream of virtlife serve ended: {err}", file=sys.stderr)


def wait_healthy(base: str, proc: subprocess.Popen[str], timeout_s: float = 30) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"virtlife serve exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"virtlife serve did not answer at {base} within {timeout_s:g} s")


def cli_ended(message: Message) -> bool:
    return (message.get("vm") == VM and message.get("kind") == "lifecycle"
            and message.get("event") in ("stopped", "crashed"))


def cli_started(message: Message) -> bool:
    return (message.get("vm") == VM and message.get("kind") == "lifecycle"
            and message.get("event") == "started")


def served_ended(message: Message) -> bool:
    return (message.get("type") == "state" and message.get("name") == VM
            and message.get("state") in ("shutoff", "crashed"))


def served_running(message: Message) -> bool:
    return (message.get("type") == "state" and message.get("name") == VM
            and message.get("state") == "running")


def destroy_by_virsh(where: Where) -> Callable[[], None]:
    def destroy() -> None:
        subprocess.run(["virsh", "-q", "-c", where.uri, "destroy", VM], check=True,
                       capture_output=True)
    return destroy


def kill_qemu(where: Where) -> Callable[[], None]:
    def kill() -> None:
        os.kill(where.qemu_pid(), signal.SIGKILL)
    return kill


class RawEvents:
    """The floor: the same lifecycle events on a raw libvirt-python connection in this
    process (libvirt's own time from the trigger to its event)."""

    def __init__(self, observer: Observer, uri: str) -> None:
        ensure_event_loop()
        self.conn = libvirt.open(uri)
        names = ("defined", "undefined", "started", "suspended", "resumed", "stopped",
                 "shutdown", "pmsuspended", "crashed")

        def lifecycle(_c: Any, dom: Any, event: int, _detail: int, _o: Any) -> None:
            name = names[event] if 0 <= event < len(names) else str(event)
            observer.put({"vm": dom.name(), "kind": "lifecycle", "event": name})

        self.callback = self.conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lifecycle, None)

    def close(self) -> None:
        self.conn.domainEventDeregisterAny(self.callback)
        self.conn.close()


class Panic:
    """A guest panic on cue: the guest is told to panic on an unknown NMI (through its
    agent, before the clock starts), then the NMI is injected."""

    def __init__(self, services: Services, uri: str) -> None:
        self.services = services
        self.conn = libvirt.open(uri)

    def prepare(self) -> None:
        from virtlife.hypervisor.agent import Agent

        agent = Agent(self.services.fleet.resolve(f"{HOST}/{VM}"))
        pid = agent.exec_start("/bin/sh",
                               ["-c", "echo 1 > /proc/sys/kernel/unknown_nmi_panic"])
        deadline = time.monotonic() + 10
        status = agent.exec_status(pid)
        while not status.exited and time.monotonic() < deadline:
            time.sleep(0.05)
            status = agent.exec_status(pid)
        if status.exit_code != 0:
            raise RuntimeError(f"the guest cannot be told to panic on an NMI: {status}")

    def __call__(self) -> None:
        self.conn.lookupByName(VM).injectNMI(0)

    def close(self) -> None:
        self.conn.close()


def orphan_reap_s() -> float:
    """How long this machine's PID 1 takes to reap an orphan that was killed. QEMU is
    such an orphan (it daemonizes), and libvirt waits, when it stops a domain, until the
    QEMU process is gone: a zombie still counts as there (kill(pid, 0) succeeds)."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's side
        grandchild = os.fork()
        if grandchild == 0:
            time.sleep(60)
            os._exit(0)
        os.write(write, str(grandchild).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    orphan = int(os.read(read, 32))
    os.close(read)
    t0 = time.monotonic()
    os.kill(orphan, signal.SIGKILL)
    while time.monotonic() - t0 < 30:
        try:
            Path(f"/proc/{orphan}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.005)
    return time.monotonic() - t0


def ms(seconds: float | None) -> float:
    return math.nan if seconds is None else seconds * 1000


Samples = tuple[list[float], list[float], list[float]]  # events, serve, raw libvirt (ms)


def run_rounds(services: Services, where: Where, cli: Observer, served: Observer,
               raw: Observer, rounds: int) -> dict[str, Samples]:
    life = services.lifecycle
    panic = Panic(services, where.uri)
    triggers: list[tuple[str, Callable[[], None], bool]] = [
        ("virsh destroy", destroy_by_virsh(where), False),
        ("QEMU killed (SIGKILL)", kill_qemu(where), False),
        ("guest panic (NMI)", panic, True),
    ]
    results: dict[str, Samples] = {}
    try:
        for name, trigger, needs_agent in triggers:
            via_cli, via_serve, via_raw = results.setdefault(name, ([], [], []))
            for _ in range(rounds):
                life.start(f"{HOST}/{VM}", wait_agent=needs_agent)  # each round ends it
                if needs_agent:
                    panic.prepare()
                # both observers have caught up with the start before the clock starts
                if (cli.wait_for(cli_started, WAIT_S) is None
                        or served.wait_for(served_running, WAIT_S) is None):
                    raise RuntimeError("an observer did not report the VM's start")
                time.sleep(0.2)
                for observer in (cli, served, raw):
                    observer.drain()
                t0 = time.monotonic()
                trigger()
                for observer, ended, into in ((cli, cli_ended, via_cli),
                                              (served, served_ended, via_serve),
                                              (raw, cli_ended, via_raw)):
                    stamp = observer.wait_for(ended, WAIT_S)
                    into.append(ms(None if stamp is None else stamp - t0))
                guest = services.fleet.resolve(f"{HOST}/{VM}")
                if guest.status().state.is_active:  # crashed: preserved by on_crash
                    guest.destroy()
            print(f"  {name}: virtlife events "
                  + " ".join(f"{v:.0f}" for v in via_cli) + " ms; serve "
                  + " ".join(f"{v:.0f}" for v in via_serve) + " ms; raw libvirt "
                  + " ".join(f"{v:.0f}" for v in via_raw) + " ms", flush=True)
    finally:
        panic.close()
    return results


def median_ms(values: list[float]) -> float:
    """The median, a missed round counting as infinitely late."""
    return statistics.median(math.inf if math.isnan(v) else v for v in values)


def added_ms(ours: list[float], raw: list[float]) -> float:
    """The median of what virtlife adds to libvirt's own time, round by round."""
    return median_ms([a - b for a, b in zip(ours, raw, strict=True)])


def report(results: dict[str, Samples], rounds: int) -> list[str]:
    lines = [f"{'trigger':<24} {'virtlife events':>16} {'serve /api/events':>18} "
             f"{'raw libvirt':>12} {'added (events/serve)':>21}  "
             f"target ≤ {TARGET_MS:.0f} ms (medians of {rounds})"]
    for name, (via_cli, via_serve, via_raw) in results.items():
        a, b, c = median_ms(via_cli), median_ms(via_serve), median_ms(via_raw)
        added = f"{added_ms(via_cli, via_raw):.1f} / {added_ms(via_serve, via_raw):.1f} ms"
        verdict = "pass" if max(a, b) <= TARGET_MS else "MISS"
        lines.append(f"{name:<24} {a:14.1f}ms {b:16.1f}ms {c:10.1f}ms {added:>21}  {verdict}")
    lines.append("(raw libvirt: the same event on a libvirt-python connection of this "
                 "process, the floor libvirt itself sets; added: what virtlife adds to it)")
    return lines


def save(results: dict[str, Samples], rounds: int, reap_s: float, where: Where) -> None:
    """The table and the targets into bench/RESULTS.md."""
    rows: list[dict[str, object]] = []
    targets: list[tuple[str, float, float, bool]] = []
    for name, (via_cli, via_serve, via_raw) in results.items():
        a, b = median_ms(via_cli), median_ms(via_serve)
        rows.append({"trigger": name, "virtlife events ms": a, "serve stream ms": b,
                     "raw libvirt ms": median_ms(via_raw),
                     "added by events ms": added_ms(via_cli, via_raw),
                     "added by serve ms": added_ms(via_serve, via_raw)})
        targets += [(f"{name} -> virtlife events <= {TARGET_MS:.0f} ms", a, TARGET_MS,
                     a <= TARGET_MS),
                    (f"{name} -> serve /api/events <= {TARGET_MS:.0f} ms", b, TARGET_MS,
                     b <= TARGET_MS)]
    record("Event latency", rows, targets, notes=(
        f"Medians of {rounds} rounds per trigger, from the trigger (virsh launched, "
        "SIGKILL sent, NMI injected) to the line of a running `virtlife events --json` "
        "and to the `state` message of a running `virtlife serve`. `raw libvirt`: the "
        "same lifecycle event on a libvirt-python connection of the benchmark's process, "
        "libvirt's own time; `added`: the median of virtlife's time minus it, round by "
        f"round. Measured on {where.label}: {where.reaping(reap_s)}. This matters "
        "because QEMU is an orphan (libvirtd daemonizes it), and libvirt reports a "
        "destroy, or a QEMU that died, only once the QEMU process is gone, zombie "
        "included (it polls `kill(pid, 0)` every 200 ms, which a zombie still answers): "
        "under a PID 1 that reaps late, the destroy and SIGKILL rows measure PID 1. The "
        "lab starts libvirtd under virtlife's reaper (a child subreaper, "
        "`virtlife.lab.reaper`), as systemd would reap it. Even reaped at once, the "
        "floor is libvirt's: a destroy sends SIGTERM and then finds QEMU gone at the "
        "earliest at its first poll 200 ms later (virProcessKillPainfully), and after "
        "a SIGKILL libvirt hears the monitor close while QEMU is still exiting, so its "
        "stop also waits one poll: the raw libvirt column is that floor, and `added` "
        "is all virtlife can change."
        + (f" NOTE: {pid1_warning(where.parent, reap_s)}."
           if where.uri == URI and where.parent is not None
           and pid1_bound(where.parent, reap_s) else "")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--on", choices=("auto", "system", "private"), default="auto",
                        help="the libvirtd to measure (auto: the system's, unless it is "
                        "left to a PID 1 that reaps late; then a private lab host's)")
    args = parser.parse_args()
    rounds = args.rounds
    image = prepare()
    if image is None:
        return 1
    reap = orphan_reap_s()
    procs: list[subprocess.Popen[str]] = []
    stop = threading.Event()
    with tempfile.TemporaryDirectory() as home, libvirtd_for(args.on, reap) as where:
        print(f"measuring on {where.label}: {where.reaping(reap)}", flush=True)
        os.environ["VIRTLIFE_HOME"] = home  # this process and the observers: a store of ours
        with open_services(None) as services:
            store = services.need_store()
            store.hosts.add(HOST, where.uri)
            token = store.tokens.create("bench-events", read_only=True)
            provision.create(services.lifecycle, lab_guest_spec(image, VM), host=HOST)
            try:
                cli, served = Observer("virtlife events"), Observer("virtlife serve")
                events_proc = subprocess.Popen(
                    virtlife_cmd("events", "--json", "--host", HOST), text=True,
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                procs.append(events_proc)
                threading.Thread(target=follow_cli, args=(events_proc, cli),
                                 daemon=True).start()
                port = free_port()
                serve_proc = subprocess.Popen(
                    virtlife_cmd("serve", "--listen", f"127.0.0.1:{port}"), text=True,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                procs.append(serve_proc)
                base = f"http://127.0.0.1:{port}"
                wait_healthy(base, serve_proc)
                threading.Thread(target=follow_sse, args=(base, token, served, stop),
                                 daemon=True).start()
                if cli.wait_for(lambda m: m.get("kind") == "host"
                                and m.get("event") == "connected", 30) is None:
                    raise RuntimeError("virtlife events did not connect within 30 s")
                time.sleep(0.5)  # the stream's subscription is open
                raw = Observer("raw libvirt")
                raw_events = RawEvents(raw, where.uri)
                try:
                    results = run_rounds(services, where, cli, served, raw, rounds)
                finally:
                    raw_events.close()
            finally:
                stop.set()
                for proc in procs:
                    proc.terminate()
                for proc in procs:
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                remove_vm(services, VM)
    print("\n".join(report(results, rounds)))
    print(f"measured on {where.label}: {where.reaping(reap)} (libvirt waits for QEMU's "
          "zombie to go before it reports a destroy or a killed QEMU)")
    save(results, rounds, reap, where)
    return 0


if __name__ == "__main__":
    sys.exit(main())
