"""API under load: many concurrent ``GET /api/vms`` on a served light fleet.

It brings up its own light lab (``virtlife.lab.light``, ``--hosts`` x ``--vms``,
default 20 x 50: 1000 VMs), starts ``virtlife serve`` over it with a reader token, waits
until the server lists every host from its cache, and then, for each path
(``/api/vms`` and, as the server's floor, ``/api/health``): ``--clients`` concurrent
clients (asyncio, one httpx connection each) send ``--requests`` requests each, one
after the other. It reports the latency of each request (p50, p99) and the requests
per second over the whole burst, and takes the lab down at the end, also when it
fails. Every answer must be 200 (and list all the VMs); asserts nothing else.

    .venv/bin/python bench/api.py [--hosts 20] [--vms 50] [--clients 200] [--requests 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from serving import Sampler, Served, cpu_seconds, proc_status

from virtlife.lab import light
from virtlife.lab.hostprep import can_run_real_stack
from virtlife.store import open_store

P99_S = 0.25
RATE = 500.0


async def _burst(base: str, token: str, path: str, clients: int, requests: int,
                 expect_vms: int | None) -> tuple[list[float], float, int]:
    """(latencies, wall seconds, answers that were not right)."""
    import httpx

    latencies: list[float] = []
    wrong = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        async def one_client() -> None:
            nonlocal wrong
            for _ in range(requests):
                t0 = time.perf_counter()
                response = await client.get(path)
                body = response.content
                latencies.append(time.perf_counter() - t0)
                if response.status_code != 200:
                    wrong += 1
                elif expect_vms is not None and body.count(b'"allowed"') != expect_vms:
                    wrong += 1

        await client.get("/api/health")  # one connection up before the clock starts
        t0 = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        return latencies, time.perf_counter() - t0, wrong


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(server: Served, path: str, clients: int, requests: int,
            expect_vms: int | None) -> dict[str, object]:
    cpu0 = cpu_seconds(server.pid)
    latencies, wall, wrong = asyncio.run(_burst(server.base, server.token, path, clients,
                                                requests, expect_vms))
    cpu = cpu_seconds(server.pid) - cpu0
    one = []
    for _ in range(5):  # one request alone, for comparison
        one.append(asyncio.run(_burst(server.base, server.token, path, 1, 1,
                                      expect_vms))[0][0])
    return {"path": path, "clients": clients, "requests": len(latencies),
            "p50 s": statistics.median(latencies), "p99 s": _quantile(latencies, 0.99),
            "max s": max(latencies), "req/s": len(latencies) / wall,
            "alone s": statistics.median(one),
            "server CPU ms/req": 1000 * cpu / (len(latencies) + 1),
            "load avg 1 min": os.getloadavg()[0],
            "not 200/complete": wrong}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--vms", type=int, default=50)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--note", default="", help="said under the table (what ran)")
    args = parser.parse_args()
    ok, why = can_run_real_stack()
    if not ok:
        print(f"bench/api.py needs the real stack: {why}")
        return 1
    rows: list[dict[str, object]] = []
    status: dict[str, int] = {}
    threads_max = 0
    try:
        up = light.up(args.hosts, vms=args.vms, running_hosts=2,
                      progress=lambda m: print(f"  {m}"))
        with tempfile.TemporaryDirectory(prefix="vl-bench-api-") as tmp:
            home = Path(tmp)
            store = open_store(home / "virtlife.db")
            try:
                for h in up.hosts:
                    store.hosts.add(h.name, h.uri)
            finally:
                store.close()
            server = Served(home)
            sampler: Sampler | None = None
            try:
                server.start()
                sampler = Sampler(server.pid)
                warm = server.wait_cached(args.hosts, 300.0)
                print(f"  server over {args.hosts} hosts: listed from its cache after "
                      f"{warm:.1f} s")
                expect = args.hosts * args.vms
                for path, vms in (("/api/health", None), ("/api/vms", expect)):
                    rows.append(measure(server, path, args.clients, args.requests, vms))
                    print("  " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float)
                                           else f"{k} {v}" for k, v in rows[-1].items()))
                status = proc_status(server.pid)
            finally:
                if sampler is not None:
                    sampler.stop()
                    threads_max = sampler.max_threads
                server.stop()
    finally:
        _, actions = light.down()
        print("light lab down: " + "; ".join(actions))
    record(rows, args, status, threads_max)
    return 0


def record(rows: list[dict[str, object]], args: argparse.Namespace, status: dict[str, int],
           threads_max: int) -> None:
    vms = next(r for r in rows if r["path"] == "/api/vms")
    p99, rate = float(vms["p99 s"]), float(vms["req/s"])  # type: ignore[arg-type]
    complete = vms["not 200/complete"] == 0
    targets = [
        (f"{args.clients} concurrent GET /api/vms ({args.hosts} hosts x {args.vms} VMs): "
         "p99 s", p99, P99_S, p99 <= P99_S and complete),
        (f"GET /api/vms from the cache, requests/s ({args.clients} concurrent)", rate, RATE,
         rate >= RATE and complete),
    ]
    notes = (f"A light lab of {args.hosts} hosts x {args.vms} VMs served by one `virtlife "
             f"serve` (its cache filled first). {args.clients} asyncio clients on one "
             f"httpx connection pool, each sending {args.requests} requests one after the "
             "other; latency from sending to the whole body read; req/s over the whole "
             "burst; `alone s`: one request with no other load from the bench (median of 5); "
             "`server CPU ms/req`: the server process's CPU time (user + system, all "
             "threads, /proc/PID/stat) over the burst, divided by its requests: what the "
             "machine's other load does not change much; `load avg`: the machine's, after "
             "the burst (other work shares these 2 cores). The "
             "client runs on the same 2 cores as the server. Server after the run: "
             f"{status.get('Threads', 0)} threads ({threads_max} most seen), RSS "
             f"{status.get('VmRSS', 0) / 1024:.0f} MiB." + (f" {args.note}" if args.note
                                                             else ""))
    try:
        from results import record as write
    except ImportError:
        return
    write("API under load", rows, targets, notes=notes)


if __name__ == "__main__":
    sys.exit(main())
