"""Fixtures for tests against the real local libvirtd + QEMU (TCG) and the test guest.

``real_stack`` (tests/conftest.py, the security tests use it too) prepares the host
once per session (KVM node, daemons, guest build); ``make_vm`` defines test-guest VMs
with their own disk copies and always removes them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from real_support import remove_vm
from virtlife.lab.guest import GuestImage

URI = "qemu:///system"


@pytest.fixture
def services(real_stack: GuestImage, tmp_path: Path) -> Iterator[object]:
    from virtlife.services.context import open_services

    with open_services(URI, store_path=tmp_path / "store.db") as s:
        yield s


@pytest.fixture
def make_vm(services: object, real_stack: GuestImage,
            request: pytest.FixtureRequest) -> Iterator[Callable[..., str]]:
    """``make_vm(suffix="", **spec_options) -> name``: a defined, shut-off test-guest VM."""
    from virtlife.lab.spec import lab_guest_spec
    from virtlife.services import provision

    made: list[tuple[str, Path | None]] = []
    base = "vl-it-" + request.node.name.removeprefix("test_")[:24].replace("[", "-").rstrip("]")

    def make(suffix: str = "", **options: object) -> str:
        name = f"{base}{suffix}-{os.getpid()}"
        remove_vm(name)
        spec = lab_guest_spec(real_stack, name, **options)  # type: ignore[arg-type]
        made.append((name, spec.disks[0] if spec.disks else None))
        provision.create(services.lifecycle, spec,  # type: ignore[attr-defined]
                         host=services.default_host())  # type: ignore[attr-defined]
        return name

    yield make
    for name, disk in made:
        remove_vm(name)
        if disk is not None and disk.exists():
            disk.unlink()


@pytest.fixture(scope="session")
def private_host(real_stack: GuestImage) -> Iterator[object]:
    """A private libvirt host (``virtlife.lab.privhost``: own mount namespace, daemons and
    host_uuid) for the whole session, owned by this process; always stopped, even when
    tests fail. Hosts left by killed earlier runs are swept away first."""
    from virtlife.lab import privhost

    privhost.sweep()
    host = privhost.start(f"pytest-{os.getpid()}", owner_pid=os.getpid())
    try:
        yield host
    finally:
        host.stop()


@pytest.fixture(scope="session")
def lab_session(real_stack: GuestImage, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[object]:
    """The multi-host lab (``virtlife lab up 2 --owner-pid``: hosts lab-a and lab-b at
    qemu+tcp://10.253.7.11/system and .12, pool lab-shared) for the whole session, its
    inventory in a home of its own (``.home``, ``.env``, ``.virtlife(...)``); always taken
    down, even when tests fail. Every test that uses it runs on one xdist worker (the
    ``lab`` group, tests/conftest.py), so the lab comes up once. One lab per machine: it
    waits while another test session's lab is up (tests/lab_support.py)."""
    from lab_support import lab_session as session

    with session(tmp_path_factory.mktemp("lab-home")) as lab:
        yield lab


@pytest.fixture
def lab(lab_session: object) -> object:
    """``lab_session``, brought back up first when an earlier test took it down or broke it."""
    lab_session.ensure_up()  # type: ignore[attr-defined]
    return lab_session


@pytest.fixture
def lab_vms(lab: object) -> Iterator[list[str]]:
    """Names of VMs to remove from every lab host afterwards, with their disks."""
    import subprocess

    from virtlife import config
    from virtlife.lab import cluster

    names: list[str] = []
    yield names
    status = cluster.status()
    for h in status.hosts if status is not None else ():
        for name in names:
            for args in (("destroy", name), ("undefine", name, "--managed-save",
                                             "--snapshots-metadata")):
                subprocess.run(["virsh", "-q", "-c", h.uri, *args], capture_output=True,
                               timeout=120, check=False)
    pool_dir = status.record.pool_dir if status is not None else None
    for name in names:
        for directory in ((pool_dir,) if pool_dir else ()) + (config.images_dir(),):
            for leftover in directory.glob(f"{name}.*"):
                leftover.unlink()
