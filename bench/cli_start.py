"""CLI start-up benchmark: virtlife commands as processes against virsh, in the same run.

Cold (no server): ``virtlife --help``, ``virtlife list --all`` (one host: the local
qemu:///system, from a throwaway inventory) and ``virtlife state VM``, each paired with
its virsh counterpart and timed alternately ``--rounds`` times; the medians, the
ratio, and beside it the floors: bare Python, Python + ``import libvirt`` (no command
that needs libvirt can start faster) and Python + ``import click`` (nor one that click
parses, such as ``--help``), against the same virsh figure. Then the
same list/state while a ``virtlife serve`` runs (the served path: the CLI asks the
server's local socket and imports neither libvirt nor the services). Then where the
start-up time goes (``python -X importtime``). The benchmark defines its own VM (never
started) and starts its own server, and removes both. Nothing is asserted; the
targets' PASS/MISS go to ``bench/RESULTS.md`` (``results.record``).

    .venv/bin/python bench/cli_start.py [--rounds N]

Needs root and a running libvirtd (qemu:///system).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from results import record

URI = "qemu:///system"
BIN = Path(sys.executable).with_name("virtlife")
PYTHON = sys.executable
VM = f"vl-bench-cli-{os.getpid()}"
ENTRY = "import sys; from virtlife.cli.main import main; sys.exit(main())"
TARGETS = {"help": 4.0, "list": 5.0, "state": 5.0, "served list": 2.0, "served state": 2.0}


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    # as installed: bytecode cached (with PYTHONDONTWRITEBYTECODE, a module edited since
    # its .pyc was written is compiled again by every run)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["VIRTLIFE_HOME"] = str(home)
    return env


def timed(cmd: Sequence[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    run = subprocess.run(cmd, env=env, capture_output=True)
    took = time.perf_counter() - t0
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({run.returncode}): "
                           f"{run.stderr.decode(errors='replace').strip()}")
    return took


def paired(cmds: dict[str, Sequence[str]], env: dict[str, str],
           rounds: int) -> dict[str, float]:
    """Each command once per round, in a rotating order; the median of each."""
    names = list(cmds)
    for name in names:  # warm the page cache once, not counted
        timed(cmds[name], env)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(rounds):
        for name in names[i % len(names):] + names[:i % len(names)]:
            times[name].append(timed(cmds[name], env))
    return {n: statistics.median(t) for n, t in times.items()}


def define_vm() -> None:
    xml = (f"<domain type='qemu'><name>{VM}</name><memory unit='MiB'>64</memory>"
           "<os><type arch='x86_64'>hvm</type></os></domain>")
    with tempfile.NamedTemporaryFile("w", suffix=".xml", delete=False) as f:
        f.write(xml)
    try:
        subprocess.run(["virsh", "-q", "-c", URI, "define", f.name], check=True,
                       capture_output=True)
    finally:
        os.unlink(f.name)


def remove_vm() -> None:
    subprocess.run(["virsh", "-q", "-c", URI, "undefine", VM], capture_output=True)


def start_server(env: dict[str, str], home: Path) -> subprocess.Popen[bytes]:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([str(BIN), "serve", "--listen", f"127.0.0.1:{port}"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    from virtlife.cli import served

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        answer = served.ask({"op": "state", "vm": VM},
                            path=str(home / served.SOCKET_NAME))
        if answer is not None and answer.get("source") == "cache":
            return server
        if server.poll() is not None:
            raise RuntimeError("virtlife serve ended: " + (
                server.stderr.read().decode() if server.stderr else ""))
        time.sleep(0.1)
    stop_server(server)
    raise RuntimeError("virtlife serve did not answer from its cache within 60 s")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(signal.SIGINT)
    try:
        server.wait(20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def importtime(args: Sequence[str], env: dict[str, str], top: int) -> list[tuple[str, float]]:
    """The ``top`` imports by cumulative time (ms) of ``virtlife ARGS``."""
    # as the virtlife script starts it (python -m would add runpy's imports)
    run = subprocess.run([PYTHON, "-X", "importtime", "-c", ENTRY, *args],
                         env=env, capture_output=True, text=True)
    found: list[tuple[str, float]] = []
    for line in run.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            _, cumulative, name = line[12:].split("|")
            found.append((name[1:].rstrip(), int(cumulative) / 1000))
    total = sum(ms for name, ms in found if not name.startswith(" "))  # the outermost
    found.sort(key=lambda item: -item[1])
    return [("(all imports)", total), *found[:top]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--top", type=int, default=12, help="import-time entries shown")
    args = parser.parse_args()
    if os.geteuid() != 0 or subprocess.run(["virsh", "-c", URI, "uri"],
                                           capture_output=True).returncode != 0:
        print("bench/cli_start.py needs root and libvirtd (qemu:///system)")
        return 1
    home = Path(tempfile.mkdtemp(prefix="vl-bench-cli-"))
    env = _env(home)
    subprocess.run([str(BIN), "host", "add", "local", URI], env=env, check=True,
                   capture_output=True)
    define_vm()
    floor = {"python": [PYTHON, "-c", "pass"], "python+libvirt": [PYTHON, "-c", "import libvirt"],
             "python+click": [PYTHON, "-c", "import click"]}
    virsh = {"help": ["virsh", "--help"], "list": ["virsh", "-c", URI, "list", "--all"],
             "state": ["virsh", "-c", URI, "domstate", "--reason", VM]}
    ours = {"help": [str(BIN), "--help"], "list": [str(BIN), "list", "--all"],
            "state": [str(BIN), "state", VM], "list -c": [str(BIN), "-c", URI, "list", "--all"]}
    rows: list[dict[str, object]] = []
    ratios: dict[str, float] = {}
    try:
        cold = paired({**{f"virsh {k}": v for k, v in virsh.items()},
                       **{f"virtlife {k}": v for k, v in ours.items()}, **floor},
                      env, args.rounds)
        for name in ("help", "list", "state", "list -c"):
            base = virsh[name.split()[0]]
            vsh = cold[f"virsh {name.split()[0]}"]
            ours_s = cold[f"virtlife {name}"]
            ratios[name] = ours_s / vsh
            rows.append({
                "path": "cold", "command": " ".join(ours[name][1:]) or "virtlife",
                "virtlife ms": ours_s * 1000, "baseline": " ".join(base),
                "baseline ms": vsh * 1000, "ratio": ratios[name],
                "floor: python": cold["python"] / vsh,
                "floor: python+libvirt": cold["python+libvirt"] / vsh,
                "floor: python+click": cold["python+click"] / vsh,
            })
        # cold, as the timed runs were: no server socket, not even a stale one
        breakdown = {what: importtime(cmd, env, args.top) for what, cmd in
                     (("--help", ["--help"]), ("list --all", ["list", "--all"]))}
        server = start_server(env, home)
        try:
            hot = paired({"virsh list": virsh["list"], "virsh state": virsh["state"],
                          "virtlife list": ours["list"], "virtlife state": ours["state"]},
                         env, args.rounds)
        finally:
            stop_server(server)
        for name in ("list", "state"):
            ratios[f"served {name}"] = hot[f"virtlife {name}"] / hot[f"virsh {name}"]
            rows.append({
                "path": "served", "command": " ".join(ours[name][1:]),
                "virtlife ms": hot[f"virtlife {name}"] * 1000,
                "baseline": " ".join(virsh[name]), "baseline ms": hot[f"virsh {name}"] * 1000,
                "ratio": ratios[f"served {name}"],
                "floor: python": cold["python"] / hot[f"virsh {name}"],
                "floor: python+libvirt": float("nan"), "floor: python+click": float("nan"),
            })
    finally:
        remove_vm()
        subprocess.run(["rm", "-rf", str(home)])
    print(f"{'path':<7} {'command':<34} {'virtlife':>9} {'baseline':>9} {'ratio':>6} "
          f"{'floor py':>9} {'py+libvirt':>11} {'py+click':>9}")
    def floor(value: float, width: int) -> str:
        """A floor's ratio, or "-" where it does not apply (the served path loads
        neither libvirt nor click)."""
        return f"{'-':>{width}} " if value != value else f"{value:{width}.2f}x"

    for r in rows:
        print(f"{r['path']:<7} {r['command']:<34} {r['virtlife ms']:8.1f}ms "
              f"{r['baseline ms']:8.1f}ms {r['ratio']:5.2f}x {r['floor: python']:8.2f}x "
              f"{floor(r['floor: python+libvirt'], 10)} {floor(r['floor: python+click'], 8)}")
    notes = []
    for what, entries in breakdown.items():
        print(f"\nimport time of `virtlife {what}` (cumulative ms, top {args.top}):")
        notes.append(f"Import time of `virtlife {what}` (cumulative ms): " + ", ".join(
            f"{name.strip()} {ms:.1f}" for name, ms in entries[:8]) + ".")
        for name, ms in entries:
            print(f"  {ms:8.1f}  {name}")
    targets = [
        ("virtlife --help <= 4x virsh --help", ratios["help"], TARGETS["help"]),
        ("virtlife list --all (one host) <= 5x virsh list --all", ratios["list"],
         TARGETS["list"]),
        ("virtlife state VM <= 5x virsh domstate", ratios["state"], TARGETS["state"]),
        ("served: virtlife list --all <= 2x virsh", ratios["served list"],
         TARGETS["served list"]),
        ("served: virtlife state VM <= 2x virsh", ratios["served state"],
         TARGETS["served state"]),
    ]
    print()
    record("CLI cold start and served path", rows,
           [(what, measured, limit, measured <= limit) for what, measured, limit in targets],
           notes=f"Medians of {args.rounds} paired runs each (commands timed in rotating "
                 "order, outputs piped). Floors: bare Python, Python + `import libvirt` and "
                 "Python + `import click` (what the click path cannot go below), over the "
                 "same virsh time.\n\n" + "\n\n".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
