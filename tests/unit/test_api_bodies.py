"""``api.bodies``: the body of ``GET /api/vms`` is the listing's JSON, written again as
soon as any row or unreachable host differs, and kept (the same bytes) while none does;
and ``allowed_operations``, now kept per state, still answers each caller afresh."""

from __future__ import annotations

import json

from virtlife.api.bodies import ListingBodies, listing_dict
from virtlife.services.fleet import FleetListing, HostProblem, VMRow
from virtlife.states import Operation, StateInfo, VMState, allowed_operations

RUNNING = StateInfo(VMState.RUNNING, "booted")
PAUSED = StateInfo(VMState.PAUSED, "user")


def listing(state: StateInfo = RUNNING, down: bool = False) -> FleetListing:
    rows = [VMRow("h1", "a", state, 2, 512, True, "u-a"),
            VMRow("h1", "b", StateInfo(VMState.SHUTOFF, "shutdown"), 1, 256, True, "u-b")]
    problems = [HostProblem("h2", "qemu+tcp://h2/system", "gone")] if down else []
    return FleetListing(rows, problems, ["h1"])


def test_the_body_is_the_listings_json_with_the_allowed_operations() -> None:
    body = json.loads(ListingBodies().body((True, None), listing(down=True)))
    assert body == json.loads(json.dumps(listing_dict(listing(down=True))))
    first = body["vms"][0]
    assert (first["name"], first["state"], first["label"]) == ("a", "running", "running")
    assert "suspend" in first["allowed"] and "resume" not in first["allowed"]
    assert body["unreachable"] == [{"host": "h2", "uri": "qemu+tcp://h2/system",
                                    "message": "gone"}]


def test_an_equal_listing_gets_the_kept_body() -> None:
    bodies = ListingBodies()
    first = bodies.body((True, None), listing())
    assert bodies.body((True, None), listing()) is first  # new, equal rows: not rewritten


def test_a_changed_state_or_host_problem_writes_a_new_body() -> None:
    bodies = ListingBodies()
    bodies.body((True, None), listing())
    paused = json.loads(bodies.body((True, None), listing(PAUSED)))
    assert paused["vms"][0]["state"] == "paused" and "resume" in paused["vms"][0]["allowed"]
    down = json.loads(bodies.body((True, None), listing(PAUSED, down=True)))
    assert [p["host"] for p in down["unreachable"]] == ["h2"]


def test_queries_keep_their_own_bodies() -> None:
    bodies = ListingBodies()
    everything = bodies.body((True, None), listing())
    one_host = bodies.body((True, "h1"), listing(PAUSED))
    assert json.loads(one_host)["vms"][0]["state"] == "paused"
    assert bodies.body((True, None), listing()) is everything


def test_allowed_operations_answers_each_caller_with_its_own_list() -> None:
    mine = allowed_operations(PAUSED)
    assert Operation.RESUME in mine
    mine.clear()  # a caller that changes its answer changes no one else's
    assert Operation.RESUME in allowed_operations(PAUSED)
    assert allowed_operations(RUNNING) != allowed_operations(PAUSED)
