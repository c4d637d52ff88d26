"""Lifecycle benchmark: virtlife's service layer against raw libvirt-python and virsh.

Per operation it prints the median time of each contender and virtlife's ratios, and
the "Operation overhead" target: the service layer ≤ 1.2x raw libvirt-python for
suspend/resume, state and list --all. Contenders run interleaved, round by round (a
paired run), so drift in the machine's load hits them alike.

What "the same calls on raw libvirt-python" are: the service is asked by VM name, so
the raw baseline looks the VM up by name too (``lookupByName`` then the call) — what a
script given a name does. The service also reads the state it reached (its confirming
wait) and writes the journal; the raw baseline does neither. The ratio against a
domain handle held across rounds is printed beside it, for reference. Nothing is
asserted.

    .venv/bin/python bench/lifecycle.py [--rounds N]

Needs the real stack (root, libvirtd running, the test guest built; `make setup`).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import URI, prepare, remove_vm
from results import record

from virtlife.hypervisor.libvirt_api import libvirt
from virtlife.lab.guest import GuestImage
from virtlife.lab.spec import lab_guest_spec
from virtlife.services import provision
from virtlife.services.context import Services, open_services
from virtlife.services.lifecycle import Lifecycle
from virtlife.services.operations import Operations
from virtlife.store.journal import Actor, new_op_id

VM = f"vl-bench-{os.getpid()}"
TARGET = 1.2  # the service layer against raw libvirt-python (by name)
NAN = float("nan")
Row = tuple[str, float, float, float, float, bool]  # name, ours, raw, held, virsh, target?


def paired(contenders: list[Callable[[], object]], rounds: int) -> list[float]:
    """Median seconds of each contender, all run in turn each round; the order rotates
    from round to round, so that none always follows the same one."""
    for fn in contenders:  # one warm-up each
        fn()
    times: list[list[float]] = [[] for _ in contenders]
    n = len(contenders)
    for r in range(rounds):
        for i in range(n):
            k = (r + i) % n
            t0 = time.perf_counter()
            contenders[k]()
            times[k].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def virsh(*args: str) -> None:
    subprocess.run(["virsh", "-q", "-c", URI, *args], check=True, capture_output=True)


def measure(rounds: int, image: GuestImage) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp, open_services(
            URI, store_path=Path(tmp) / "bench.db") as s:
        life = s.lifecycle
        provision.create(life, lab_guest_spec(image, VM), host=s.default_host())
        raw_conn = libvirt.open(URI)
        try:
            life.start(VM, wait_agent=True)
            dom = raw_conn.lookupByName(VM)

            def pair_virtlife() -> None:
                life.suspend(VM)
                life.resume(VM, sync_time=False)

            def pair_raw() -> None:
                raw_conn.lookupByName(VM).suspend()
                raw_conn.lookupByName(VM).resume()

            def pair_held() -> None:
                dom.suspend()
                dom.resume()

            def pair_virsh() -> None:
                virsh("suspend", VM)
                virsh("resume", VM)

            # in-process contenders are paired among themselves; virsh (a process each
            # time, whose start-up disturbs whatever follows it) is timed on its own
            ours, raw, held = paired([pair_virtlife, pair_raw, pair_held], rounds * 3)
            (vsh,) = paired([pair_virsh], rounds)
            rows.append(("suspend+resume", ours, raw, held, vsh, True))
            unjournalled = Lifecycle(s.fleet, None, operations=Operations(None))

            def pair_unjournalled() -> None:
                unjournalled.suspend(VM)
                unjournalled.resume(VM, sync_time=False)

            ours, raw = paired([pair_unjournalled, pair_raw], rounds * 3)
            rows.append(("suspend+resume, no journal", ours, raw, NAN, NAN, False))
            rows += floors(s, raw_conn, pair_raw, rounds)

            # resume's default: the guest clock read, set from this machine's, read again
            def synced_virtlife() -> None:
                life.suspend(VM)
                life.resume(VM)

            def synced_raw() -> None:
                raw_conn.lookupByName(VM).suspend()
                d = raw_conn.lookupByName(VM)
                d.resume()
                d.getTime()
                now = time.time()
                d.setTime({"seconds": int(now), "nseconds": int(now % 1 * 1e9)})
                d.getTime()

            def synced_virsh() -> None:
                virsh("suspend", VM)
                virsh("resume", VM)
                virsh("domtime", VM, "--sync")

            ours, raw = paired([synced_virtlife, synced_raw], rounds)
            (vsh,) = paired([synced_virsh], rounds)
            rows.append(("suspend+resume+clock sync", ours, raw, NAN, vsh, False))

            def list_raw() -> None:
                for d in raw_conn.listAllDomains(0):
                    d.info()
                    d.state()

            ours, raw = paired([lambda: s.fleet.list_vms(), list_raw], rounds * 3)
            (vsh,) = paired([lambda: virsh("list", "--all")], rounds)
            rows.append(("list --all", ours, raw, NAN, vsh, True))

            # what a VMRow holds: also the persistence and the managed-save image
            def list_raw_full() -> None:
                for d in raw_conn.listAllDomains(0):
                    d.info()
                    d.state()
                    d.isPersistent()
                    d.hasManagedSaveImage(0)

            ours, raw = paired([lambda: s.fleet.list_vms(), list_raw_full], rounds * 3)
            rows.append(("list --all, same fields", ours, raw, NAN, NAN, False))
            ours, raw, held = paired(
                [lambda: life.state(VM), lambda: raw_conn.lookupByName(VM).state(),
                 lambda: dom.state()], rounds * 3)
            (vsh,) = paired([lambda: virsh("domstate", "--reason", VM)], rounds)
            rows.append(("state", ours, raw, held, vsh, True))
            cli = [str(Path(sys.executable).with_name("virtlife")), "-c", URI, "state", VM]
            ours, vsh = paired([lambda: subprocess.run(cli, check=True, capture_output=True),
                                lambda: virsh("domstate", "--reason", VM)], rounds)
            rows.append(("CLI process: state", ours, NAN, NAN, vsh, False))
        finally:
            raw_conn.close()
            remove_vm(s, VM)
    return rows


def floors(s: Services, raw_conn: Any, pair_raw: Callable[[], None],
           rounds: int) -> list[Row]:
    """What the service's promises cost by themselves, in raw libvirt-python with no
    service layer: the two reads it must make once it holds the VM (the state, for the
    transition guard, and the libvirt job), then also the journal's running row before
    the call and its completion after it, on the service's own store. The service can
    come no nearer to raw than these."""
    journal = s.journal
    assert journal is not None
    actor = Actor("bench", "bench")
    host = s.default_host()

    def one(act: str, journalled: bool) -> None:
        d = raw_conn.lookupByName(VM)
        op_id = new_op_id()
        if journalled:
            uuid = d.UUIDString()
            journal.begin(op_id=op_id, host=host, vm=VM, operation=act, actor=actor,
                          lock_key=uuid, uuid=uuid, domid=d.ID())
        d.state(0)
        d.jobStats(0)
        if act == "suspend":
            d.suspend()
        else:
            d.resume()
        if journalled:
            journal.finish(op_id, "ok", "", 0.0)

    def reads() -> None:
        one("suspend", False)
        one("resume", False)

    def reads_journal() -> None:
        one("suspend", True)
        one("resume", True)

    floor_reads, floor_journal, raw = paired([reads, reads_journal, pair_raw], rounds * 3)
    return [("floor: state+job reads", floor_reads, raw, NAN, NAN, False),
            ("floor: reads + journal", floor_journal, raw, NAN, NAN, False)]


def ratio(a: float, b: float) -> str:
    return "-" if math.isnan(a) or math.isnan(b) else f"{a / b:.2f}x"


def report(rows: list[Row], rounds: int) -> list[str]:
    lines = [f"{'operation':<26} {'virtlife':>10} {'raw py':>10} {'held dom':>10} "
             f"{'virsh':>10} {'vs raw':>7} {'vs held':>8} {'vs virsh':>9}  target"]
    for name, ours, raw, held, vsh, target in rows:
        cells = " ".join("         -" if math.isnan(v) else f"{v * 1000:8.2f}ms"
                         for v in (ours, raw, held, vsh))
        verdict = ""
        if target:
            verdict = f"≤ {TARGET}x raw: " + ("pass" if ours / raw <= TARGET else "MISS")
        lines.append(f"{name:<26} {cells} {ratio(ours, raw):>7} {ratio(ours, held):>8} "
                     f"{ratio(ours, vsh):>9}  {verdict}")
    lines.append(f"(medians; {rounds * 3} paired rounds for the target rows, {rounds} for "
                 "the others; raw py looks the VM up by name, held dom reuses one handle; "
                 "virsh timed apart)")
    return lines


NOTES = ("Medians of paired runs (contenders interleaved round by round). `raw py` is "
         "libvirt-python given the VM's name, as the service is: `lookupByName` then the "
         "call; `held dom` reuses one domain handle. The service layer also checks the "
         "transition and any libvirt job (a state and a job read), writes the journal's "
         "running and finished rows, and confirms the state reached (its own lifecycle "
         "event, or a read). The `floor` rows are suspend+resume with those promises alone "
         "in raw libvirt-python, no service layer: `state+job reads` adds the two reads "
         "to each call, `reads + journal` also writes the journal's two rows on the "
         "service's store; the service can come no nearer to raw than they do. "
         "`list --all`'s raw baseline reads state, reason, vCPUs and "
         "memory (`info` + `state` per domain), not the persistence and managed-save image "
         "a listing row also shows; `list --all, same fields` adds those two calls per "
         "domain to it.")


def save(rows: list[Row]) -> None:
    """The table and the targets into bench/RESULTS.md."""
    def cell(v: float) -> float:
        return round(v * 1000, 3)

    record("Operation overhead", [
        {"operation": name, "virtlife ms": cell(ours), "raw py ms": cell(raw),
         "held dom ms": cell(held), "virsh ms": cell(vsh),
         "vs raw": round(ours / raw, 2) if raw == raw else NAN,
         "vs held": round(ours / held, 2) if held == held else NAN}
        for name, ours, raw, held, vsh, _t in rows],
        [(f"{name}: service layer <= {TARGET}x raw libvirt-python", round(ours / raw, 2),
          TARGET, ours / raw <= TARGET) for name, ours, raw, _h, _v, target in rows
         if target], notes=NOTES)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    rounds = parser.parse_args().rounds
    image = prepare()
    if image is None:
        return 1
    rows = measure(rounds, image)
    print("\n".join(report(rows, rounds)))
    save(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
