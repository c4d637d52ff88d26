"""Boot benchmark: start -> guest agent answers, one VM and several at once.

virtlife's ``start(wait_agent=True)`` (event-driven) against a raw libvirt-python
baseline in the same run (``create()`` then ``guest-ping`` every 0.1 s). Prints the
median per VM and the ratio; asserts nothing.

    .venv/bin/python bench/boot.py [--rounds N] [--parallel K]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from common import URI, prepare, remove_vm
from results import record

from virtlife.hypervisor.libvirt_api import libvirt, libvirt_qemu
from virtlife.lab.spec import lab_guest_spec
from virtlife.services import provision
from virtlife.services.context import open_services


def raw_boot(conn: object, name: str) -> float:
    dom = conn.lookupByName(name)  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    dom.create()
    while True:
        try:
            libvirt_qemu.qemuAgentCommand(dom, json.dumps({"execute": "guest-ping"}), 2, 0)
            return time.perf_counter() - t0
        except libvirt.libvirtError:
            time.sleep(0.1)


def concurrently(names: list[str], boot: Callable[[str], float]) -> list[float]:
    times: dict[str, float] = {}

    def run(name: str) -> None:
        times[name] = boot(name)

    threads = [threading.Thread(target=run, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [times[n] for n in names]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=4)
    args = parser.parse_args()
    image = prepare()
    if image is None:
        return 1
    names = [f"vl-bench-boot{i}" for i in range(args.parallel)]
    results: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp, open_services(
            URI, store_path=Path(tmp) / "bench.db") as s:
        life = s.lifecycle
        raw = libvirt.open(URI)
        for name in names:
            provision.create(life, lab_guest_spec(image, name), host=s.default_host())
        try:
            for count in (1, args.parallel):
                group = names[:count]
                for _ in range(args.rounds):
                    ours = concurrently(group, lambda n: life.start(n, wait_agent=True)
                                        .duration_s)
                    results.setdefault(("virtlife", count), []).extend(ours)
                    for n in group:
                        life.destroy(n)
                    base = concurrently(group, lambda n: raw_boot(raw, n))
                    results.setdefault(("raw libvirt-python", count), []).extend(base)
                    for n in group:
                        life.destroy(n)
        finally:
            for name in names:
                remove_vm(s, name)
            raw.close()
    print(f"{'VMs at once':<12} {'virtlife':>10} {'raw py':>10} {'ratio':>7}")
    rows: list[dict[str, object]] = []
    for count in (1, args.parallel):
        ours = statistics.median(results[("virtlife", count)])
        base = statistics.median(results[("raw libvirt-python", count)])
        print(f"{count:<12} {ours:9.2f}s {base:9.2f}s {ours / base:6.2f}x")
        rows.append({"VMs at once": count, "virtlife s": ours, "raw libvirt-python s": base,
                     "ratio": ours / base})
    record("Boot to a responding guest agent", rows, [],
           notes=f"Medians of {args.rounds} rounds: `virtlife start --wait-agent` (the "
                 "journalled operation, waiting on the agent's event) against raw "
                 "libvirt-python (`create()`, then pinging the agent until it answers), "
                 "the test guest on TCG; no target (the issues set none).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
