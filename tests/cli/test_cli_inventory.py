"""The implicit local host (issue 15 N): adding the first host to an empty inventory
ends it, and the command says so and how to keep it, instead of letting the local VMs
vanish from ``list`` in silence. Runs the real ``virtlife`` command."""

from __future__ import annotations

from test_bad_input import virtlife

from support import NODE_URI
from virtlife.config import LOCAL_HOST_NAME, LOCAL_URI


def test_the_first_host_added_says_the_implicit_local_host_is_dropped_and_how_to_keep_it(
        ) -> None:
    first = virtlife("host", "add", "hv1", NODE_URI)
    assert first.code == 0, first.err
    keep = f"`virtlife host add {LOCAL_HOST_NAME} {LOCAL_URI}` keeps it"
    assert [line for line in first.err.splitlines() if "implicit local host" in line] == [
        f"virtlife: warning: the implicit local host ({LOCAL_HOST_NAME} at {LOCAL_URI}) is "
        "no longer in effect now that the inventory holds hosts, so its VMs no longer show "
        f"in `virtlife list`; {keep}"], first.err
    second = virtlife("host", "add", "hv2", NODE_URI)
    assert second.code == 0, second.err
    assert "implicit local host" not in second.err  # said once, when it happened
    listed = virtlife("host", "list")
    assert LOCAL_HOST_NAME not in listed.out.split()


def test_adding_the_local_host_itself_first_drops_nothing() -> None:
    run = virtlife("host", "add", LOCAL_HOST_NAME, LOCAL_URI)
    assert "implicit local host" not in run.err, run.err
