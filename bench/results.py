"""Where every benchmark leaves its numbers: one section each in ``bench/RESULTS.md``.

Call ``record`` once at the end of a benchmark::

    from results import record

    record(
        "CLI cold start",                       # the section's title (one per benchmark part)
        [{"command": "list --all", "virtlife ms": 92.1, "virsh ms": 24.3, "ratio": 3.79}],
        [("list --all <= 5x virsh", 3.79, 5.0, True)],   # (target, measured, limit, met)
        notes="optional text under the table",
    )

``rows`` is a list of dicts: the columns are their keys in the order first seen;
floats are printed with 2 decimals (3 significant digits under 1). ``targets`` are
``(what, measured, limit, met)``: ``met`` is given by the caller, since some targets
are "at most" and others "at least"; each is printed as PASS or MISS beside the
figures. The file opens with a header naming the machine, the date, and the libvirt
and QEMU versions (rewritten by every call); a section recorded again replaces the
older one of the same title, so that the file always holds the latest run of each.
Nothing here measures or asserts; it only writes the file (and prints the targets).
"""

from __future__ import annotations

import datetime
import functools
import os
import platform
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).resolve().with_name("RESULTS.md")
TITLE = "# Benchmark results"
Target = tuple[str, float, float, bool]


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:  # NaN: no figure
            return "-"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value).replace("|", "\\|")


def table(rows: Sequence[dict[str, object]]) -> str:
    """``rows`` as a Markdown table (empty text for no rows)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    if not columns:
        return ""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _run(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


@functools.cache
def machine() -> dict[str, str]:
    """What the header says about this machine and its virtualisation stack."""
    cpu = ""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in
                    Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    version = _run("virsh", "-c", "qemu:///system", "version")

    def find(pattern: str) -> str:
        found = re.search(pattern, version)
        return found.group(1) if found else "unknown"

    return {
        "machine": f"{platform.node()}: {cpu or platform.machine()}, {os.cpu_count()} "
                   f"cores, {memory or 'memory unknown'}",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "libvirt": find(r"Using library: libvirt ([\d.]+)"),
        "libvirtd": find(r"Running against daemon: ([\d.]+)"),
        "qemu": find(r"Running hypervisor: QEMU ([\d.]+)"),
    }


def header(now: datetime.datetime) -> str:
    m = machine()
    return (f"{TITLE}\n\nWritten by the benchmarks in `bench/` (`make bench`); each section "
            "is its latest run.\n\n"
            f"- Machine: {m['machine']}\n- OS: {m['os']}, Python {m['python']}\n"
            f"- libvirt {m['libvirt']}"
            + (f" (daemon {m['libvirtd']})" if m["libvirtd"] != "unknown" else "")
            + f", QEMU {m['qemu']}\n"
            f"- Updated: {now:%Y-%m-%d %H:%M} UTC\n")


def _sections(text: str) -> list[tuple[str, str]]:
    """(title, body) of every ``## `` section in ``text``."""
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return [(parts[i].strip(), parts[i + 1]) for i in range(1, len(parts) - 1, 2)]


def record(section: str, rows: Sequence[dict[str, object]], targets: Sequence[Target],
           *, notes: str = "", path: Path = RESULTS) -> str:
    """Write ``section`` (its table, its targets with PASS/MISS, ``notes``) into the
    results file, replacing an older section of that title; returns the section's text."""
    now = datetime.datetime.now(datetime.UTC)
    body = f"\n_Run {now:%Y-%m-%d %H:%M} UTC._\n\n" + table(rows)
    if targets:
        body += "\n| target | measured | limit | result |\n|---|---|---|---|\n"
        body += "".join(f"| {_cell(what)} | {_cell(measured)} | {_cell(limit)} | "
                        f"{'PASS' if met else 'MISS'} |\n"
                        for what, measured, limit, met in targets)
    if notes:
        body += "\n" + notes.strip() + "\n"
    body += "\n"
    old = path.read_text() if path.exists() else ""
    sections = _sections(old)
    if any(t == section for t, _ in sections):  # in its place: the file keeps its order
        sections = [(t, body if t == section else b) for t, b in sections]
    else:
        sections.append((section, body))
    path.write_text(header(now) + "".join(f"\n## {t}\n\n{b.strip()}\n" for t, b in sections))
    for what, measured, limit, met in targets:
        print(f"{'PASS' if met else 'MISS'}  {what}: {_cell(measured)} (limit {_cell(limit)})")
    return body
