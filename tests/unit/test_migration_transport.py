"""What ``migrate`` refuses about the transport before libvirt starts anything: the
combinations libvirt 9.0 refuses only once the migration began (seen in the lab)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from virtlife.services.migration.checks import CheckOptions, CopyStorage
from virtlife.services.migration.service import MoveOptions, PreflightFailed, refuse_transport

GUEST: Any = SimpleNamespace(name="web1")


@pytest.mark.parametrize(("move", "copy", "clash"), [
    (MoveOptions(tunnelled=True, parallel=2), None, "--parallel"),
    (MoveOptions(tunnelled=True), CopyStorage.ALL, "--copy-storage all"),
    (MoveOptions(tunnelled=True), CopyStorage.INC, "--copy-storage inc"),
])
def test_tunnelled_with_multifd_or_a_disk_copy_is_refused_in_one_line(
        move: MoveOptions, copy: CopyStorage | None, clash: str) -> None:
    with pytest.raises(PreflightFailed) as err:
        refuse_transport(GUEST, "lab-b", CheckOptions(copy_storage=copy), move)
    assert str(err.value) == (
        f"cannot migrate web1 to lab-b: --tunnelled and {clash} do not go together "
        "(libvirt carries a tunnelled migration in one stream over its own connection); "
        "drop one of them")


@pytest.mark.parametrize(("move", "copy"), [
    (MoveOptions(tunnelled=True), None),
    (MoveOptions(parallel=2), CopyStorage.ALL),
])
def test_each_transport_option_alone_or_multifd_with_a_disk_copy_passes(
        move: MoveOptions, copy: CopyStorage | None) -> None:
    refuse_transport(GUEST, "lab-b", CheckOptions(copy_storage=copy), move)
