"""``virtlife define`` of an oversized XML on the real qemu:///system (issue 15 G).

libvirt's RPC carries a string of at most 4 MiB; an XML longer than that used to fail
there as "host unreachable" (exit 4). ``xml.domain.check_xml_size`` refuses anything over
1 MiB before libvirt is asked: exit 64, naming the limit, and nothing is defined.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from support import VIRTLIFE
from virtlife.lab.guest import GuestImage

pytestmark = pytest.mark.integration


def test_an_xml_over_libvirts_rpc_limit_is_bad_input_not_an_unreachable_host(
        real_stack: GuestImage, tmp_path: Path) -> None:
    name = f"vl-it-bigxml-{os.getpid()}"
    xml = tmp_path / f"{name}.xml"
    xml.write_text(f"<domain type='qemu'><name>{name}</name><description>"
                   + "x" * (5 * 2**20) + "</description><memory unit='MiB'>64</memory>"
                   "<os><type>hvm</type></os></domain>")
    run = subprocess.run([*VIRTLIFE, "define", str(xml)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert run.returncode == 64, run.stderr
    assert run.stderr == (f"virtlife: {xml} is larger than 1 MiB, the most virtlife accepts "
                          "(a domain XML is a few KiB); is it the right file?\n")
    assert subprocess.run([*VIRTLIFE, "state", name], capture_output=True, text=True,
                          timeout=60, check=False).returncode == 2  # nothing defined
