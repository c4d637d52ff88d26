"""The hypervisor and store packages export their names lazily (``virtlife.lazyexports``):
a name's module is imported on first use, kept in the package after, and an unknown name
is the usual AttributeError."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
import virtlife.store as store
assert "virtlife.store.journal" not in sys.modules
journal = store.Journal
assert "virtlife.store.journal" in sys.modules and vars(store)["Journal"] is journal
assert "virtlife.store.db" not in sys.modules
print("ok")
"""


def test_a_name_is_imported_on_first_use_and_kept() -> None:
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         timeout=60)
    assert run.stdout == "ok\n", run.stderr


@pytest.mark.parametrize("package", ["virtlife.store", "virtlife.hypervisor"])
def test_an_unknown_name_is_an_attribute_error(package: str) -> None:
    module = __import__(package, fromlist=["_"])
    with pytest.raises(AttributeError, match=f"module '{package}' has no attribute 'Nope'"):
        module.Nope  # noqa: B018
