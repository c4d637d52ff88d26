"""The REST API's fleet routes (``api.routes_fleet``) on a served app over libvirt's test
driver: three hosts, ``a`` (the second test node: vm-running, and db1 shut off), ``b``
(the test node) and ``c`` (``test:///default``, whose one VM is shut off for the
evacuation that completes).

The test driver migrates nothing and its placement finds no room, so a real
evacuation of ``a`` leaves vm-running there and says why; an evacuation of ``c`` with
``stopped: leave`` has nothing to move and completes. The cancel of a running
evacuation replaces the evacuation's migrations with one that holds until it is
aborted (and its plan with one that sends vm-running to ``b``): what is checked is
the route's path to the same flag the CLI's ``--cancel`` sets.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_support import Served, served, sse_messages
from support import NODE2_URI, NODE_URI, UNREACHABLE_URI
from virtlife import errors
from virtlife.services import maintenance as mt
from virtlife.services.migration.checks import Report
from virtlife.services.placement import Placement, Plan, VMToPlace
from virtlife.store import open_store

WAIT_S = 60.0


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Served]:
    hosts = {"a": NODE2_URI, "b": NODE_URI, "c": "test:///default"}
    with served(tmp_path / "s.db", hosts, follow_events=False) as s:
        yield s


@pytest.fixture
def op(api: Served) -> Iterator[httpx.Client]:
    with api.client(token=api.operator_token) as c:
        yield c


@pytest.fixture
def reader(api: Served) -> Iterator[httpx.Client]:
    with api.client(token=api.read_only_token) as c:
        yield c


def _error(response: httpx.Response, status: int) -> dict[str, str]:
    assert response.status_code == status, response.text
    body: dict[str, str] = response.json()["error"]
    return body


def _modes(client: httpx.Client) -> dict[str, str]:
    return {h["name"]: h["mode"] for h in client.get("/api/hosts").json()}


def _shut_off_c(api: Served, op: httpx.Client) -> None:
    done = op.post("/api/vms/c/test/actions/destroy")
    assert done.status_code == 202, done.text
    assert api.wait_operation(op, done.json()["op_id"])["status"] == "ok"


CHANGES = [
    ("POST", "/api/hosts/a/maintenance", {"stopped": "leave"}),
    ("POST", "/api/hosts/a/maintenance/cancel", None),
    ("POST", "/api/hosts/a/activate", None),
    ("PUT", "/api/vms/a/vm-running/pin", None),
    ("DELETE", "/api/vms/a/vm-running/pin", None),
]


@pytest.mark.parametrize(("method", "path", "body"), CHANGES,
                         ids=[f"{m} {p}" for m, p, _ in CHANGES])
def test_a_reader_is_refused_every_fleet_change_and_nothing_changes(
        api: Served, reader: httpx.Client, method: str, path: str, body: Any) -> None:
    response = reader.request(method, path, json=body)
    assert "needs an operator token" in _error(response, 403)["message"]
    assert _modes(reader) == {"a": "active", "b": "active", "c": "active"}
    with open_store(_store(api)) as store:
        assert store.balance.pins() == {}
        assert store.journal.running() == []
    with httpx.Client(base_url=api.url) as anonymous:
        assert anonymous.request(method, path, json=body).status_code == 401


def _store(api: Served) -> Path | str:
    """What opens the served app's store again (another connection, as another
    process's would be)."""
    source: Path | str = api.app.state.services.need_store().source
    return source


@pytest.mark.parametrize("path", ["/api/hosts/a/maintenance/plan",
                                  "/api/balance/plan?window_s=0.1"])
def test_the_plans_are_for_readers_and_need_a_token(api: Served, reader: httpx.Client,
                                                    path: str) -> None:
    assert reader.get(path).status_code == 200
    with httpx.Client(base_url=api.url) as anonymous:
        assert anonymous.get(path).status_code == 401


def test_the_maintenance_plan_lists_each_vm_with_where_it_goes_or_why_it_stays(
        reader: httpx.Client) -> None:
    plan = reader.get("/api/hosts/a/maintenance/plan", params={"stopped": "leave"}).json()
    assert plan["host"] == "a" and plan["notes"] == []
    vms = {v["vm"]: v for v in plan["vms"]}
    assert set(vms) == {"vm-running", "db1"}
    assert set(vms["vm-running"]) == {"vm", "from", "kind", "state", "to", "checks",
                                      "reason", "kept"}
    running = vms["vm-running"]
    assert (running["from"], running["kind"], running["to"]) == ("a", "live", None)
    assert running["reason"]  # the test driver's hosts have no room: it says so
    assert vms["db1"]["kept"] and "--stopped leave" in vms["db1"]["reason"]
    assert plan["stays"] == ["vm-running"]  # db1 stays by choice
    moved = reader.get("/api/hosts/a/maintenance/plan").json()  # stopped=move
    assert {v["vm"]: v["kind"] for v in moved["vms"]}["db1"] == "offline"
    assert not any(v["kept"] for v in moved["vms"])
    assert _modes(reader)["a"] == "active"  # a dry run changes nothing


def test_the_plan_refuses_bad_input_and_unknown_hosts(reader: httpx.Client) -> None:
    _error(reader.get("/api/hosts/a/maintenance/plan", params={"stopped": "keep"}), 422)
    assert _error(reader.get("/api/hosts/nope/maintenance/plan"), 404)["code"] == \
        "host_not_found"


def test_an_evacuation_with_nothing_to_move_completes_and_activate_ends_it(
        api: Served, op: httpx.Client) -> None:
    _shut_off_c(api, op)
    started = op.post("/api/hosts/c/maintenance", json={"stopped": "leave",
                                                        "concurrency": 1})
    assert started.status_code == 202, started.text
    op_id = started.json()["op_id"]
    assert started.json()["url"] == f"/api/operations/{op_id}"
    done = api.wait_operation(op, op_id, timeout_s=WAIT_S)
    assert done["status"] == "ok", done
    result = done["result"]
    assert (result["op_id"], result["host"], result["stays"]) == (op_id, "c", [])
    assert [(s["vm"], s["outcome"], s["kept"]) for s in result["steps"]] == [
        ("test", "left", True)]
    # progress went through start_operation's sink: the plan, then the overall counts
    stages = {u["stage"] for u in done["updates"]}
    assert {"plan", "overall"} <= stages
    assert {u["op_id"] for u in done["updates"]} == {op_id}
    assert _modes(op) == {"a": "active", "b": "active", "c": "maintenance"}
    with open_store(_store(api)) as store:
        row = store.journal.get(op_id)  # the job's id is the evacuation's journal row
        assert row is not None and (row.operation, row.outcome) == (mt.OPERATION, "ok")
        assert row.actor.user == f"api:{api.operator_name}"
    activated = op.post("/api/hosts/c/activate")
    assert activated.status_code == 200, activated.text
    assert activated.json() == {"host": "c", "mode": "active", "was": "maintenance"}
    assert _modes(op)["c"] == "active"
    again = op.post("/api/hosts/c/activate").json()
    assert again["was"] == "active"


def test_an_evacuation_that_leaves_a_vm_behind_ends_as_an_error_naming_it(
        api: Served, op: httpx.Client) -> None:
    started = op.post("/api/hosts/a/maintenance", json={"stopped": "leave"})
    assert started.status_code == 202, started.text
    done = api.wait_operation(op, started.json()["op_id"], timeout_s=WAIT_S)
    assert done["status"] == "error", done
    assert "vm-running" in done["error"] and "a stays in maintenance" in done["error"]
    steps = {s["vm"]: s for s in done["result"]["steps"]}  # every step kept
    assert steps["vm-running"]["outcome"] == "left" and steps["vm-running"]["reason"]
    assert steps["db1"]["kept"]
    assert done["result"]["stays"] == ["vm-running"]
    assert _modes(op)["a"] == "maintenance"


@pytest.mark.parametrize("body", [{"concurrency": 0}, {"concurrency": 65},
                                  {"timeout_s": 0}, {"stopped": "keep"}, {"dry_run": True}])
def test_maintenance_options_out_of_bounds_are_refused_before_anything_starts(
        api: Served, op: httpx.Client, body: dict[str, Any]) -> None:
    assert _error(op.post("/api/hosts/a/maintenance", json=body), 422)["code"] == \
        "invalid_input"
    assert _modes(op)["a"] == "active"
    assert op.get("/api/operations").json() == []


def test_the_last_active_host_is_refused_with_409(api: Served, op: httpx.Client) -> None:
    with open_store(_store(api)) as store:
        store.hosts.set_mode("b", "maintenance")
        store.hosts.set_mode("c", "maintenance")
    err = _error(op.post("/api/hosts/a/maintenance"), 409)
    assert err["code"] == "invalid_transition" and "last active host" in err["message"]
    assert _error(op.get("/api/hosts/a/maintenance/plan"), 409)["code"] == \
        "invalid_transition"
    assert _modes(op) == {"a": "active", "b": "maintenance", "c": "maintenance"}


def test_an_unreachable_host_is_refused_with_503(tmp_path: Path) -> None:
    hosts = {"a": NODE2_URI, "down": UNREACHABLE_URI}
    with served(tmp_path / "u.db", hosts, follow_events=False, any_uri=True) as api, \
            api.client(token=api.operator_token) as op:
        err = _error(op.post("/api/hosts/down/maintenance"), 503)
        assert err["code"] == "host_unreachable" and "cannot be reached" in err["message"]
        assert _modes(op)["down"] == "active"


def test_cancel_when_no_evacuation_runs_is_404(op: httpx.Client) -> None:
    err = _error(op.post("/api/hosts/a/maintenance/cancel"), 404)
    assert "no evacuation of a is running" in err["message"]
    _error(op.post("/api/hosts/nope/maintenance/cancel"), 404)


class HoldingMigrations:
    """The evacuation's migrations: each move holds until ``abort_running``."""

    def __init__(self) -> None:
        self.holding = threading.Event()
        self.aborted = threading.Event()
        self.calls: list[tuple[str, str]] = []

    def migrate(self, ref: str, dest: str, **kwargs: Any) -> None:
        self.calls.append((ref, dest))
        self.holding.set()
        assert self.aborted.wait(WAIT_S), "never aborted"
        vm = ref.split("/", 1)[1]
        raise errors.OperationFailed(f"{vm} did not move to {dest}: migration aborted; "
                                     f"{vm} is running on a")

    def abort_running(self) -> int:
        self.aborted.set()
        return 1


def test_a_running_evacuation_is_refused_a_second_start_and_activate_then_cancelled(
        api: Served, op: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = HoldingMigrations()
    monkeypatch.setattr(api.app.state.services.maintenance, "migrations", fake)

    def plan(vms: list[VMToPlace], *_: Any, **__: Any) -> Plan:
        ours = [v for v in vms if v.name == "vm-running"]
        return Plan(tuple(Placement(v.name, v.source, "b", 1024,
                                    Report(v.name, v.source, "b", v.options.kind, ()))
                          for v in ours), (), ())

    monkeypatch.setattr(mt, "plan", plan)
    started = op.post("/api/hosts/a/maintenance", json={"stopped": "leave"})
    assert started.status_code == 202, started.text
    op_id = started.json()["op_id"]
    assert fake.holding.wait(WAIT_S)
    busy = _error(op.post("/api/hosts/a/maintenance"), 409)
    assert busy["code"] == "operation_busy" and op_id in busy["message"]
    assert "--cancel" in _error(op.post("/api/hosts/a/activate"), 409)["message"]
    cancelled = op.post("/api/hosts/a/maintenance/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json() == {"host": "a", "op_id": op_id, "cancel_asked": True}
    done = api.wait_operation(op, op_id, timeout_s=WAIT_S)
    assert fake.aborted.is_set() and fake.calls == [("a/vm-running", "b")]
    assert done["status"] == "error" and "cancelled" in done["error"], done
    assert done["result"]["cancelled"]
    with open_store(_store(api)) as store:
        row = store.journal.get(op_id)
        assert row is not None and row.outcome == "interrupted"
    assert _modes(op)["a"] == "maintenance"  # until activated
    _error(op.post("/api/hosts/a/maintenance/cancel"), 404)  # none runs now
    assert op.post("/api/hosts/a/activate").json()["was"] == "maintenance"


def test_pin_and_unpin_round_trip(api: Served, op: httpx.Client) -> None:
    pinned = op.put("/api/vms/a/vm-running/pin")
    assert pinned.status_code == 200, pinned.text
    uuid = "77777777-7777-7777-7777-777777777777"
    assert pinned.json() == {"vm": "vm-running", "uuid": uuid, "pinned": True,
                             "changed": True}
    assert op.put("/api/vms/a/vm-running/pin").json()["changed"] is False
    with open_store(_store(api)) as store:
        assert set(store.balance.pins()) == {uuid}
    unpinned = op.delete("/api/vms/a/vm-running/pin")
    assert unpinned.json() == {"vm": "vm-running", "uuid": uuid, "pinned": False,
                               "changed": True}
    assert op.delete("/api/vms/a/vm-running/pin").json()["changed"] is False
    with open_store(_store(api)) as store:
        assert store.balance.pins() == {}
    assert _error(op.put("/api/vms/a/nope/pin"), 404)["code"] == "vm_not_found"


def test_the_balance_plan_takes_its_limits_and_moves_nothing(api: Served,
                                                             reader: httpx.Client) -> None:
    plan = reader.get("/api/balance/plan", params={"threshold": 15, "max_moves": 2,
                                                   "window_s": 0.1}).json()
    assert (plan["dry_run"], plan["ran"], plan["threshold_pct"]) == (True, False, 15)
    assert {"moves", "before", "after", "spread_before_pct", "spread_after_pct", "stop",
            "held", "refused", "left_out"} <= set(plan)
    assert {h["host"] for h in plan["before"]} == {"a", "b", "c"}
    assert len(plan["moves"]) <= 2
    for bad in ({"threshold": 0}, {"threshold": 101}, {"max_moves": 0},
                {"window_s": 60}):
        _error(reader.get("/api/balance/plan", params=bad), 422)
    assert reader.get("/api/operations").json() == []


def test_hosts_show_their_mode_and_the_load_the_server_sampled(api: Served,
                                                               op: httpx.Client) -> None:
    hosts = op.get("/api/hosts").json()
    assert [(h["name"], h["mode"], h["load"]) for h in hosts] == [
        ("a", "active", None), ("b", "active", None), ("c", "active", None)]
    api.app.state.loads.sample()  # the background sampler's step (not started here)
    api.app.state.loads.sample()
    with open_store(_store(api)) as store:
        store.hosts.set_mode("b", "maintenance")
    hosts = {h["name"]: h for h in op.get("/api/hosts").json()}
    assert hosts["b"]["mode"] == "maintenance"
    for name in "abc":
        load = hosts[name]["load"]
        assert load is not None and load["host"] == name
        assert load["total_memory_mib"] > 0 and "memory_pct" in load


def test_the_evacuations_progress_and_end_go_on_the_event_stream(
        api: Served, op: httpx.Client) -> None:
    _shut_off_c(api, op)
    subscribed = threading.Event()
    started: list[str] = []
    seen: list[dict[str, Any]] = []

    def until(message: dict[str, Any]) -> bool:
        if message["type"] == "hello":
            subscribed.set()
        # by its description: it may end before the 202 is read here
        return message["type"] == "operation" and \
            message["description"] == "host-maintenance c"

    def follow() -> None:
        with api.client(token=api.read_only_token) as stream:
            seen.extend(sse_messages(stream, until=until, timeout_s=WAIT_S))

    follower = threading.Thread(target=follow)
    follower.start()
    try:
        assert subscribed.wait(WAIT_S)
        response = op.post("/api/hosts/c/maintenance", json={"stopped": "leave"})
        assert response.status_code == 202, response.text
        started.append(response.json()["op_id"])
    finally:
        follower.join(WAIT_S)
    op_id = started[0]
    ours = [m for m in seen if m.get("op_id") == op_id]
    stages = [m["stage"] for m in ours if m["type"] == "progress"]
    assert stages[0] == "plan" and "overall" in stages
    end = ours[-1]
    assert (end["type"], end["status"], end["description"]) == (
        "operation", "ok", "host-maintenance c")
