"""Lifecycle benchmark: virtlife against raw libvirt-python and virsh, in the same run.

It prints, per operation, the median time of each contender and virtlife's ratio to
the baselines. Nothing is asserted: the numbers are for reading, not for CI gates.

    .venv/bin/python bench/lifecycle.py [--rounds N]

Needs the real stack (root, libvirtd running, the test guest built; `make setup`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import URI, prepare, remove_vm

from virtlife.hypervisor.libvirt_api import libvirt
from virtlife.lab.spec import lab_guest_spec
from virtlife.services import provision
from virtlife.services.context import open_services

VM = f"vl-bench-{os.getpid()}"


def median_s(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def virsh(*args: str) -> None:
    subprocess.run(["virsh", "-q", "-c", URI, *args], check=True, capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    rounds = parser.parse_args().rounds
    image = prepare()
    if image is None:
        return 1
    rows: list[tuple[str, float, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp, open_services(
            URI, store_path=Path(tmp) / "bench.db") as s:
        life = s.lifecycle
        provision.create(life, lab_guest_spec(image, VM), host=s.default_host())
        try:
            life.start(VM, wait_agent=True)
            raw_conn = libvirt.open(URI)
            dom = raw_conn.lookupByName(VM)

            def pair_virtlife() -> None:
                life.suspend(VM)
                life.resume(VM, sync_time=False)

            def pair_raw() -> None:
                dom.suspend()
                dom.resume()

            rows.append(("suspend+resume", median_s(pair_virtlife, rounds),
                         median_s(pair_raw, rounds),
                         median_s(lambda: (virsh("suspend", VM), virsh("resume", VM)), rounds)))

            # resume's default: the guest clock read, set from this machine's, read again
            def synced_virtlife() -> None:
                life.suspend(VM)
                life.resume(VM)

            def synced_raw() -> None:
                dom.suspend()
                dom.resume()
                dom.getTime()
                now = time.time()
                dom.setTime({"seconds": int(now), "nseconds": int(now % 1 * 1e9)})
                dom.getTime()

            def synced_virsh() -> None:
                virsh("suspend", VM)
                virsh("resume", VM)
                virsh("domtime", VM, "--sync")

            rows.append(("suspend+resume+clock sync", median_s(synced_virtlife, rounds),
                         median_s(synced_raw, rounds), median_s(synced_virsh, rounds)))

            def list_raw() -> None:
                for d in raw_conn.listAllDomains(0):
                    d.info()
                    d.state()

            rows.append(("list --all", median_s(lambda: s.fleet.list_vms(), rounds),
                         median_s(list_raw, rounds),
                         median_s(lambda: virsh("list", "--all"), rounds)))
            rows.append(("state", median_s(lambda: life.state(VM), rounds),
                         median_s(lambda: dom.state(), rounds),
                         median_s(lambda: virsh("domstate", "--reason", VM), rounds)))
            cli = [str(Path(sys.executable).with_name("virtlife")), "-c", URI, "state", VM]
            rows.append(("CLI process: state", median_s(
                lambda: subprocess.run(cli, check=True, capture_output=True), rounds),
                float("nan"),
                median_s(lambda: virsh("domstate", "--reason", VM), rounds)))
            raw_conn.close()
        finally:
            remove_vm(s, VM)
    print(f"{'operation':<26} {'virtlife':>10} {'raw py':>10} {'virsh':>10} "
          f"{'vs raw':>8} {'vs virsh':>9}")
    for name, ours, raw, vsh in rows:
        print(f"{name:<26} {ours * 1000:9.2f}ms {raw * 1000:9.2f}ms {vsh * 1000:9.2f}ms "
              f"{ours / raw:7.2f}x {ours / vsh:8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
