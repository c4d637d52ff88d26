"""``virtlife demo``: the main job end to end, printing each step and its time.

On a Debian host where we are root, it prepares the host, builds (or reuses) the test
guest and walks one VM through its life on the real ``qemu:///system``. Elsewhere it
says why in one line and walks the same steps on libvirt's test driver. The steps
call the same services as every other command.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from virtlife import errors
from virtlife.cli.app import show_table
from virtlife.services.migration.checks import CheckOptions, MigrationKind
from virtlife.states import ShutdownMode
from virtlife.xml.domain import DomainSpec

if TYPE_CHECKING:
    from virtlife.lab.guest import GuestImage
    from virtlife.services.context import Services

T = TypeVar("T")
DEMO_VM = "virtlife-demo"
MIGRATE_VM = "virtlife-demo-mig"


def _step(label: str, fn: Callable[[], T]) -> T:
    click.echo(f"-> {label} ... ", nl=False)
    t0 = time.monotonic()
    result = fn()
    dt = time.monotonic() - t0
    from virtlife.services.operations import OperationResult

    text = str(result) if isinstance(result, OperationResult) else "done"
    click.echo(f"{text}  [{dt:.2f} s]")
    return result


def _show_list(s: Services) -> None:
    listing = s.fleet.list_vms(include_inactive=True)
    click.echo("-> virtlife list --all")
    show_table(["HOST", "NAME", "STATE", "REASON", "VCPUS", "MEMORY"],
               [(r.host, r.name, r.state.state.label, r.state.reason, r.vcpus,
                 f"{r.memory_mib} MiB") for r in listing.rows])


def _clean_leftover(s: Services, ref: str) -> bool:
    try:
        _host, state = s.lifecycle.state(ref)
    except errors.VMNotFound:
        return False
    if state.state.is_active:
        s.lifecycle.destroy(ref)
    s.lifecycle.undefine(ref, managed_save=True, snapshots=True)
    click.echo(f"-> removed a {DEMO_VM} left over from an earlier run")
    return True


def _walk(s: Services, spec: DomainSpec, save_dir: str, real: bool) -> None:
    from virtlife.services import provision

    life = s.lifecycle
    host = s.default_host()
    ref = f"{host}/{DEMO_VM}"
    if _clean_leftover(s, ref):
        for copy in spec.disk_copies:  # that VM's own disk copy: create never overwrites
            copy.target.unlink(missing_ok=True)
    _step(f"create {DEMO_VM} ({spec.memory_mib} MiB, {spec.vcpus} vCPU)",
          lambda: provision.create(life, spec, host=host, facts=s.facts))
    uuid = s.fleet.resolve(ref).uuid()  # its history, once it is gone, is by this
    _step("start and wait for the guest agent" if real else "start",
          lambda: life.start(ref, wait_agent=real))
    _show_list(s)
    if real:
        _agent_tour(s, ref)
        _console_tour(s, ref)
    _step("suspend", lambda: life.suspend(ref))
    _step("resume (no clock sync this time)", lambda: life.resume(ref, sync_time=False))
    save_file = f"{save_dir}/{DEMO_VM}.sav"
    if os.path.exists(save_file):
        os.unlink(save_file)
    _step(f"save to {save_file}", lambda: life.save(ref, save_file))
    try:  # booting fresh would drop the saved RAM, and the image would corrupt the disk
        _step("start (refused: it was saved to a file)", lambda: life.start(ref))
    except errors.InvalidTransition as err:
        click.echo(f"refused as expected: {str(err).split('; ')[0]}")
    _step("restore (then the guest clock is set right)" if real else "restore",
          lambda: life.restore(save_file, host=host, wait_agent=real))
    os.unlink(save_file)
    _step("managedsave", lambda: life.managedsave(ref))
    _step("start from the managed save", lambda: life.start(ref, wait_agent=real))
    try:
        _step("resume (refused: it is running)", lambda: life.resume(ref))
    except errors.InvalidTransition as err:
        click.echo(f"refused as expected: {err}")
    _shutdown_in_background(s, ref, real)
    _step("undefine", lambda: life.undefine(ref))
    for disk in spec.disks:  # the demo made its own disk copy; leave nothing behind
        os.unlink(disk)
    click.echo("-> virtlife history (by the VM's UUID; each operation has an id)")
    entries = s.store.journal.list(uuid=uuid, limit=20) if s.store is not None else []
    show_table(["ID", "OPERATION", "OUTCOME", "SECONDS", "DETAIL"],
               [(e.op_id, e.operation, e.outcome, f"{e.duration_s:.2f}", e.detail)
                for e in reversed(entries)])


def _agent_tour(s: Services, ref: str) -> None:
    """What the guest agent tells and does: its version, the guest's addresses, a
    quiesced snapshot, and a clock set 5 minutes behind that the next restore sets
    right."""
    info = s.agent.info(ref)
    enabled = sum(1 for c in info.commands if c.enabled)
    click.echo(f"-> virtlife agent {DEMO_VM} info ... qemu-guest-agent {info.version}, "
               f"{enabled} commands enabled")
    click.echo(f"-> virtlife agent {DEMO_VM} ifaddr")
    show_table(["interface", "MAC address", "address"],
               [(n.name, n.hwaddr, ", ".join(str(a) for a in n.addresses))
                for n in s.agent.ifaddr(ref)])
    _step("quiesced snapshot (guest file systems frozen for it, then thawed)",
          lambda: s.snapshots.create(ref, "demo-quiesced", quiesce=True))
    click.echo(f"-> virtlife snapshot {DEMO_VM} list")
    show_table(["name", "kind", "state", "parent", "current"],
               [(i.name, i.location, i.state, i.parent or "-", "*" if i.current else "")
                for i in s.snapshots.list(ref)])
    _step("delete it (its overlay merged back into the disk)",
          lambda: s.snapshots.delete(ref, "demo-quiesced"))
    _step("set the guest clock 5 minutes behind (as after a long pause)",
          lambda: s.agent.set_time(ref, time.time() - 300)[0])


def _console_tour(s: Services, ref: str) -> None:
    """Where the VM's screen is (VNC) and one line through its serial console."""
    vnc = s.consoles.vnc(ref)
    click.echo(f"-> virtlife vnc {DEMO_VM} ... {vnc.address or vnc.listen}:{vnc.port} "
               f"(display :{vnc.display}); `virtlife viewer-file {DEMO_VM}` for virt-viewer")
    marker = f"demo-{os.getpid() % 1000 * 7}"
    want = marker.encode()
    seen = b""
    t0 = time.monotonic()
    with s.consoles.serial(ref) as session:
        session.write(f"\necho {marker}\n".encode())
        while want not in seen.replace(b"echo " + want, b"") and time.monotonic() - t0 < 15:
            seen += session.read(0.5) or b""
    answered = want in seen.replace(b"echo " + want, b"")
    click.echo(f"-> virtlife console {DEMO_VM}: typed `echo {marker}`, the guest shell "
               + ("answered it" if answered else "did not answer within 15 s")
               + f"  [{time.monotonic() - t0:.2f} s]")


def _web_leg() -> None:
    """The REST API for a moment on a free port, then how to open the web UI.

    Its token lives only as long as this step: it is revoked at the end, also when the
    step fails, and never printed (a CI log keeps no working secret)."""
    import json
    import socket
    import threading
    import urllib.request

    import uvicorn

    from virtlife.api import listener
    from virtlife.api.app import create_app
    from virtlife.services.context import open_services
    from virtlife.store import open_store
    from virtlife.store.tokens import Role

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with open_services() as served:  # the inventory's hosts, as `virtlife serve` has them
        store = served.need_store()
        try:
            store.tokens.revoke("demo")
        except errors.NotFound:
            pass
        token = store.tokens.create("demo", role=Role.READER)
        try:
            server = uvicorn.Server(listener.config(create_app(served), "127.0.0.1", port,
                                                    log_level="warning", graceful_s=2))
            thread = threading.Thread(target=server.run, daemon=True)
            thread.start()
            t0 = time.monotonic()
            while not server.started and thread.is_alive() and time.monotonic() - t0 < 20:
                time.sleep(0.05)
            try:
                ask = urllib.request.Request(f"http://127.0.0.1:{port}/api/vms",
                                             headers={"Authorization": f"Bearer {token}"})
                with urllib.request.urlopen(ask, timeout=30) as answer:
                    listed = json.load(answer)
                click.echo(f"-> virtlife serve (on 127.0.0.1:{port} for a moment): GET "
                           f"/api/vms with a reader token: {len(listed['vms'])} VM(s)  "
                           f"[{time.monotonic() - t0:.2f} s]")
                click.echo(f"   the same token adding a host: {_refusal(port, token)}")
            finally:
                server.should_exit = True
                thread.join(10)
        finally:  # on a store of its own: the server closed its services as it stopped
            with open_store(store.path) as own:
                own.tokens.revoke("demo")
    url = "http://127.0.0.1:8080/"
    try:
        with urllib.request.urlopen(url + "api/health", timeout=2):
            click.echo(f"-> the web UI of the virtlife serve running here: {url}")
    except OSError:
        click.echo(f"-> the web UI: run `virtlife serve`, then open {url}")
    click.echo("   log in with a token of your own: `virtlife token create NAME` prints one "
               "(the demo's token is revoked)")


def _refusal(port: int, token: str) -> str:
    """What the served API answers a reader token that asks to add a host (an admin's
    request, whose URI would run a program were it allowed)."""
    import json
    import urllib.error
    import urllib.request

    body = json.dumps({"name": "evil", "uri": "qemu+ext:///system?command=/bin/true"})
    ask = urllib.request.Request(f"http://127.0.0.1:{port}/api/hosts", data=body.encode(),
                                 method="POST", headers={"Authorization": f"Bearer {token}",
                                                         "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(ask, timeout=30) as answer:
            return f"{answer.status} (unexpected)"
    except urllib.error.HTTPError as err:
        said = json.load(err).get("error", {}).get("message", "")
        return f"{err.code}, {said.split(';')[0]}"


def _shutdown_in_background(s: Services, ref: str, real: bool) -> None:
    """A long operation runs in the background under an id (what the REST API will
    return at once); a second operation on the VM meanwhile is refused, naming it."""
    life = s.lifecycle
    click.echo("-> graceful shutdown in the background ... ", nl=False)
    t0 = time.monotonic()
    # the test driver has neither agent nor ACPI button: one request, libvirt's choice
    mode = ShutdownMode.AUTO if real else ShutdownMode.DEFAULT
    op_id = s.jobs.submit(lambda op, progress: life.shutdown(ref, mode=mode, op_id=op,
                                                             progress=progress),
                          f"shutdown {ref}")
    click.echo(f"operation {op_id}")
    for update in s.jobs.follow(op_id, 5.0):
        if update.stage == "wait":  # it runs: the VM is taken
            try:
                life.suspend(ref)
            except errors.OperationBusy as err:
                click.echo(f"   suspend meanwhile, refused as expected: {err}")
            except errors.InvalidTransition as err:  # it was over already (test driver)
                click.echo(f"   suspend meanwhile, refused: {err}")
            break
    job = s.jobs.wait(op_id, 180.0)
    done = job.result if job.result is not None else job.error
    click.echo(f"   operation {op_id}: {job.status}: {done}  [{time.monotonic() - t0:.2f} s]")
    if job.status != "ok":
        raise errors.OperationFailed(f"the demo's shutdown did not work: {job.error}")


def _lab(*args: str) -> subprocess.CompletedProcess[str]:
    """``virtlife lab ARGS`` (the lab's own command: inventory rows included)."""
    return subprocess.run([sys.executable, "-m", "virtlife.cli.main", "lab", *args],
                          capture_output=True, text=True, check=False, timeout=300)


def _migration_leg(image: GuestImage) -> None:
    """A two-host lab, a VM moved live lab-a -> lab-b with its progress, lab-b's
    maintenance (its evacuation moves the VM live back), an offline move, then the lab
    taken down (and everything the leg made removed)."""
    from virtlife.lab import cluster
    from virtlife.lab.spec import lab_guest_spec
    from virtlife.services import provision
    from virtlife.services.context import open_services

    if cluster.status() is not None:
        click.echo("-> migration: a lab is up already; leaving it alone (skipped)")
        return
    up = _step("virtlife lab up 2 (two libvirt hosts, each in its own namespaces)",
               lambda: _lab("up", "2"))
    if up.returncode != 0:
        raise errors.LabError(f"the demo's lab did not come up: {up.stderr.strip()}")
    made: list[Path] = []  # the VM's disk copy, removed whatever happens
    try:
        status = cluster.status()
        assert status is not None
        spec = lab_guest_spec(image, MIGRATE_VM, images_dir=status.record.pool_dir)
        made.extend(spec.disks)
        with open_services() as s:
            _step(f"create and start {MIGRATE_VM} on lab-a (its disk in the shared pool)",
                  lambda: provision.create(s.lifecycle, spec, host="lab-a", start=True,
                                           wait_agent=True))

            from rich.console import Console

            from virtlife.cli.migrate_view import MigrationView

            report = s.migrations.check(MIGRATE_VM, "lab-b")
            click.echo(f"-> virtlife migrate {MIGRATE_VM} lab-b --check: "
                       f"{sum(c.status.value == 'pass' for c in report.checks)} of "
                       f"{len(report.checks)} checks pass; unsafe flag: "
                       f"{report.unsafe_reason}")
            click.echo(f"-> virtlife migrate {MIGRATE_VM} lab-b (live, checked first)")
            with MigrationView(Console()) as view:  # live on a terminal, lines elsewhere
                moved = s.migrations.migrate(MIGRATE_VM, "lab-b", progress=view)
            click.echo(f"   {moved.result}")
            _evacuation(s)
            _step("shut it down at lab-a", lambda: s.lifecycle.shutdown(f"lab-a/{MIGRATE_VM}"))
            _step(f"virtlife migrate lab-a/{MIGRATE_VM} lab-b --offline",
                  lambda: s.migrations.migrate(
                      f"lab-a/{MIGRATE_VM}", "lab-b",
                      options=CheckOptions(kind=MigrationKind.OFFLINE)).result)
            _step("undefine it", lambda: s.lifecycle.undefine(f"lab-b/{MIGRATE_VM}"))
    finally:
        for disk in made:
            disk.unlink(missing_ok=True)
        _step("virtlife lab down", lambda: _lab("down"))


def _evacuation(s: Services) -> None:
    """Host maintenance: lab-b's plan (dry run), its evacuation (the VM moves live back
    to lab-a), and lab-b taken back into service."""
    plan = _step("virtlife host maintenance lab-b --dry-run",
                 lambda: s.maintenance.plan("lab-b"))
    for vm in plan.vms:
        where = f"-> {vm.destination} ({vm.kind}; {vm.checks})" if vm.destination else (
            f"stays: {vm.reason}")
        click.echo(f"   {vm.vm}: {where}")
    done = _step("virtlife host maintenance lab-b (evacuate it)",
                 lambda: s.maintenance.evacuate("lab-b"))
    click.echo(f"   {done.summary()} in {done.seconds:.1f} s (operation {done.op_id})")
    if done.stays:
        raise errors.VirtlifeError(f"the evacuation of lab-b left {done.summary()}")
    _step("virtlife host activate lab-b", lambda: s.maintenance.activate("lab-b"))


@click.command()
@click.option("--test-driver", is_flag=True,
              help="Use libvirt's built-in test driver even where the real stack runs.")
def demo(test_driver: bool) -> None:
    """Walk a VM through its whole life on this host (or on the test driver).

    Example: make demo
    """
    from virtlife.lab.hostprep import can_run_real_stack
    from virtlife.services.context import open_services

    real, why = can_run_real_stack()
    if test_driver:
        real, why = False, "--test-driver was given"
    if real:
        from virtlife import config
        from virtlife.lab.guest import build_guest
        from virtlife.lab.hostprep import prepare_local_host
        from virtlife.lab.spec import lab_guest_spec

        click.echo("virtlife demo on the real libvirt + QEMU (qemu:///system)")
        report = _step("prepare this host", lambda: prepare_local_host())
        for line in report.actions:
            click.echo(f"   {line}")
        image = _step("build or reuse the test guest", lambda: build_guest())
        spec = lab_guest_spec(image, DEMO_VM)
        save_dir = config.images_dir()
        with open_services("qemu:///system") as s:
            _walk(s, spec, str(save_dir), real=True)
        _migration_leg(image)
        _web_leg()
    else:
        import tempfile

        click.echo(f"the real stack cannot run here ({why}); "
                   "running the same walkthrough on libvirt's test driver")
        with open_services("test:///default") as s, tempfile.TemporaryDirectory() as tmp:
            _walk(s, DomainSpec(name=DEMO_VM, memory_mib=128), tmp, real=False)
    click.echo("demo finished")


COMMANDS = [demo]
