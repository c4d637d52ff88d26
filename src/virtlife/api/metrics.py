"""What ``/metrics`` says, in the Prometheus text exposition format (version 0.0.4).

Gauges are read at scrape time from a fleet listing: VMs per host and state, and
whether each host answered. Counters cover the operations this server ran: how many
ended with each outcome, and how long they took (a summary's ``_sum``/``_count``).
No client library: the format is a few lines of text.
"""

from __future__ import annotations

import threading
from collections import Counter

from virtlife.services.fleet import FleetListing
from virtlife.states import VMState


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count: Counter[tuple[str, str]] = Counter()
        self._seconds: dict[tuple[str, str], float] = {}

    def operation_done(self, operation: str, outcome: str, seconds: float) -> None:
        with self._lock:
            self._count[(operation, outcome)] += 1
            key = (operation, outcome)
            self._seconds[key] = self._seconds.get(key, 0.0) + seconds

    def render(self, listing: FleetListing, hosts: list[str]) -> str:
        lines = ["# HELP virtlife_vms VMs by host and state.", "# TYPE virtlife_vms gauge"]
        per: Counter[tuple[str, str]] = Counter(
            (row.host, row.state.state.value) for row in listing.rows)
        for host in listing.answered:
            for state in VMState:
                if state is VMState.UNDEFINED:
                    continue
                lines.append(f'virtlife_vms{{host="{_label(host)}",state="{state.value}"}} '
                             f"{per[(host, state.value)]}")
        down = {p.host for p in listing.unreachable}
        lines += ["# HELP virtlife_host_up Whether the host's libvirtd answered (1) or not.",
                  "# TYPE virtlife_host_up gauge"]
        lines += [f'virtlife_host_up{{host="{_label(h)}"}} {0 if h in down else 1}'
                  for h in hosts]
        with self._lock:
            count, seconds = dict(self._count), dict(self._seconds)
        lines += ["# HELP virtlife_operations_total Operations this server ran, by outcome.",
                  "# TYPE virtlife_operations_total counter"]
        lines += [f'virtlife_operations_total{{operation="{_label(op)}",'
                  f'outcome="{_label(out)}"}} {n}' for (op, out), n in sorted(count.items())]
        lines += ["# HELP virtlife_operation_seconds How long those operations took.",
                  "# TYPE virtlife_operation_seconds summary"]
        for (op, out), total in sorted(seconds.items()):
            labels = f'operation="{_label(op)}",outcome="{_label(out)}"'
            lines.append(f"virtlife_operation_seconds_sum{{{labels}}} {total:.6f}")
            lines.append(f"virtlife_operation_seconds_count{{{labels}}} {count[(op, out)]}")
        return "\n".join(lines) + "\n"
