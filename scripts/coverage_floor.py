"""Fail when a core package's branch coverage (from the combined .coverage) is under 90%.

The core is what every front end stands on: services, hypervisor, states and store.
Prints one line per package; exit 1 when any is below the floor.
"""

from __future__ import annotations

import sys

import coverage

FLOOR = 90.0
CORE = ("virtlife/services/", "virtlife/hypervisor/", "virtlife/states.py", "virtlife/store/")


def main() -> int:
    cov = coverage.Coverage()
    cov.load()
    data = cov.get_data()
    totals: dict[str, list[int]] = {prefix: [0, 0] for prefix in CORE}
    for path in data.measured_files():
        prefix = next((p for p in CORE if p in path), None)
        if prefix is None:
            continue
        analysis = cov._analyze(path)  # the public report API gives no per-file numbers
        nums = analysis.numbers
        totals[prefix][0] += nums.n_statements + nums.n_branches
        totals[prefix][1] += (nums.n_statements - nums.n_missing
                              + nums.n_branches - nums.n_missing_branches)
    failed = False
    for prefix, (total, hit) in totals.items():
        pct = 100.0 * hit / total if total else 0.0
        ok = pct >= FLOOR
        failed |= not ok
        print(f"coverage floor {FLOOR:.0f}%: {prefix:<22} {pct:5.1f}%  {'ok' if ok else 'LOW'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
